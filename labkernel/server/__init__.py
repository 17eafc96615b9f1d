"""The web layer: the Jupyter server extension, its REST handlers and pages.

Everything about HTTP lives here: routes, request bodies, long polls, answer
building, the limits of all these (``LabKernelApp``'s traits) and the contract's
JSON errors. Below it, the manager knows nothing of HTTP.
"""
