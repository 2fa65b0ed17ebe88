"""The MCP tools, a module per group: `images` draw and wait, `jobs` run the same requests as jobs an agent
polls, `catalog` lists models and styles and improves prompts, `history` finds and reads earlier images; `toolkit`
is what they share."""
