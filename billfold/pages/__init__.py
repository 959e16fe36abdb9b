"""Server-rendered pages: the customers' billing pages (/billing), the operator console
(/admin) and the offline API docs (/docs). They call the domains' services, as the API does."""
