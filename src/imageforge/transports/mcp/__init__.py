"""The MCP transport: tools on the service, served over stdio and Streamable HTTP; the remote proxy."""
