"""The MCP tools, a module per group: `images` draw and wait, `jobs` run the same requests as jobs an agent
polls, `catalog` lists models and improves prompts; `toolkit` is what they share."""
