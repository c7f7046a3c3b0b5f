"""The core: tasks, handles, managers, groups, their lifecycle and close policy.

Nothing here imports the ASGI layer, the dashboard, the instruments shipped beside it, the
testing plugin or the durable package; ``trio_bg/__init__.py`` re-exports the public names.
"""
