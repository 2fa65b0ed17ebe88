"""The service: the one façade every transport calls (`ImageService`), and what it coordinates.

`facade` takes requests and answers them; `image_job` is the function the queue runs for an image job;
`job_files` keeps each job's input and output files for as long as the job is readable; `faults` remembers
which store a write failed in until it takes writes again.
"""

from imageforge.service.facade import ImageService, ServiceLimits

__all__ = ["ImageService", "ServiceLimits"]
