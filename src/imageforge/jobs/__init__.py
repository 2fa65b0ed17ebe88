"""Jobs: a generic queue that runs registered job functions, with durable records and live events."""
