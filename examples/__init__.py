"""Example apps: the same background-task scenarios as raw ASGI, Starlette and Quart-Trio."""
