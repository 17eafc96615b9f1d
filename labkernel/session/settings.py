"""The limits each session applies, as the manager's traitlets set them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SessionSettings:
    """The manager's limits that each session applies."""

    buffer_size: int
    read_budget: int
    attach_timeout: float
    kill_grace: float
    kill_timeout: float
    input_limit: int
    max_clients: int
    retained_output: int = 64 * 1024
