"""Helpers of the tests, imported as ``from support.api import Api``; the fixtures are in
``tests/conftest.py``.

- ``api``: the in-process server's REST API (``Api``), ``PROMPT``, waiting (``eventually``,
  ``run``, ``wait_ended``) and the server settings tests share (``SHELL_COMMAND``, ``FAST``).
- ``processes``: finding a session's processes: by the pid its shell prints (``NS``,
  ``printed_pid``) or by a token in their command lines (``with_token``, ``sleeping``).
- ``labs``: lab folders of a test's own (``lab_config``, ``write_lab``) and the checks route.
- ``streaming``: a reader that checks every output answer (``Reader``) and the output log.
- ``auth``: logging in as a browser does, and an authorizer that denies chosen actions.
- ``serverproc``: ``ServerProcess``, a server in a process of its own with a blocking client.
- ``containment``: the containment modes of this machine and the escapes a learner can try.
"""
