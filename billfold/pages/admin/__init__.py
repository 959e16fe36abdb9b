"""The operator console under /admin: admins only, server-rendered, on the API's services."""
