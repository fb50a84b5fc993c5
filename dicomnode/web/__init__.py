"""The worklist web page, its login, and the worklist/thumbnail API routes."""
