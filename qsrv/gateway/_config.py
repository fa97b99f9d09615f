"""What a gateway is configured with: one frozen record, built by the CLI and the local cluster,
read by the service, the job lifecycle and the doors."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from qsrv.gateway._archive import ArchiveLimits
from qsrv.gateway._runner import RunnerConfig

__all__ = ["GatewayConfig"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything a gateway needs; the CLI and the local cluster build one."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7421
    cluster_address: str | None = None
    cluster_token: str | None = None
    max_jobs_per_user: int = 4
    max_arguments_bytes: int = 16 << 20
    max_log_bytes: int = 1 << 20
    max_result_bytes: int = 64 << 20
    stop_grace_s: float = 5.0
    log_flush_interval_s: float = 1.0
    keep_sandboxes: bool = False
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    job_sandbox: str = "auto"  # see _sandbox: auto, bwrap, users, none
    job_python: str = sys.executable
    max_queued_jobs_per_user: int = 1000
    max_stored_bytes_per_user: int = 4 << 30
    max_programs_per_user: int = 100
    max_versions_per_program: int = 100
    login_failures_per_user: int = 5  # before back-off
    login_failures_per_address: int = 20
    login_backoff_max_s: float = 300.0
    login_token_ttl_s: float = 24 * 3600.0
    job_credential_ttl_s: float = 7 * 86400.0
    archive_workers: int = 2
    quantum_batch_timeout_s: float = 600.0  # an open batch idle this long: TIMED_OUT
    max_connections_per_address: int = 256  # open HTTP connections from one peer address
    header_timeout_s: float = 30.0  # a connection's first request head must come in this

    def runner_config(self) -> RunnerConfig:
        return RunnerConfig(
            root=self.data_dir / "jobs",
            cluster_address=self.cluster_address,
            max_log_bytes=self.max_log_bytes,
            max_result_bytes=self.max_result_bytes,
            stop_grace_s=self.stop_grace_s,
            keep_sandboxes=self.keep_sandboxes,
            archive_limits=self.archive_limits,
            python=self.job_python,
        )

    def quotas(self) -> dict[str, int]:
        """The per-user quotas, as ``qsrv user list`` shows them."""
        return {"queued_jobs": self.max_queued_jobs_per_user,
                "stored_bytes": self.max_stored_bytes_per_user,
                "programs": self.max_programs_per_user,
                "versions_per_program": self.max_versions_per_program,
                "running_jobs": self.max_jobs_per_user}
