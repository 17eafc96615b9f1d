"""Clients of the REST API: ``LabClient``, the notebook ``Terminal`` widget, the
``labkernel`` command and ``labkernel test``."""
