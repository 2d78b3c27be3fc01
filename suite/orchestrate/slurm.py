"""What a SLURM job of a bench asks for: partition, account, qos, time, GPUs, CPUs, memory,
constraint, extra ``#SBATCH`` lines and setup commands (``module load``, an environment).

Set in a plan's ``[slurm]`` table and on the command line (which wins); one typed value,
turned into submitit's executor parameters and, for ``--dry-run``, into the ``#SBATCH`` lines
it stands for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SlurmSettings(BaseModel):
    """The sbatch options of every job of a bench (defaults: one GPU, 8 CPUs, 24 hours)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int = Field(1440, ge=1)  # minutes
    gpus_per_job: int = Field(1, ge=0)
    cpus_per_job: int = Field(8, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    constraint: str | None = None
    sbatch: tuple[str, ...] = ()  # extra lines: "--key=value" or "--flag"
    setup: tuple[str, ...] = ()  # shell commands run before the job's command
    signal_seconds: int = Field(120, ge=0)  # warning before the time limit (checkpoint, requeue)
    cluster: Literal["slurm", "local"] = "slurm"  # submitit's executor; local: for tests

    @field_validator("sbatch")
    @classmethod
    def _options(cls, lines: tuple[str, ...]) -> tuple[str, ...]:
        for line in lines:
            if not line.startswith("--") or len(line) < 3 or " " in line.split("=")[0]:
                raise ValueError(f"sbatch line {line!r} must look like --key=value or --flag")
        return lines

    def merged(self, overrides: dict[str, Any]) -> SlurmSettings:
        """These settings with ``overrides`` (None values ignored) on top, checked again."""
        given = {k: v for k, v in overrides.items() if v is not None and v != ()}
        return SlurmSettings.model_validate({**self.model_dump(), **given})

    def extra_parameters(self) -> dict[str, Any]:
        """The ``sbatch`` lines as submitit's ``slurm_additional_parameters``."""
        extra: dict[str, Any] = {}
        for line in self.sbatch:
            key, sep, value = line[2:].partition("=")
            extra[key.replace("-", "_")] = value if sep else True
        return extra

    def executor_parameters(self, name: str) -> dict[str, Any]:
        """Keyword arguments of submitit's ``AutoExecutor.update_parameters``."""
        parameters: dict[str, Any] = {
            "name": name, "timeout_min": self.time, "nodes": 1, "tasks_per_node": 1,
            "gpus_per_node": self.gpus_per_job, "cpus_per_task": self.cpus_per_job}
        if self.mem_gb is not None:
            parameters["mem_gb"] = self.mem_gb
        slurm_only = {"slurm_partition": self.partition, "slurm_account": self.account,
                      "slurm_qos": self.qos, "slurm_constraint": self.constraint,
                      "slurm_setup": list(self.setup) or None,
                      "slurm_additional_parameters": self.extra_parameters() or None,
                      "slurm_signal_delay_s": self.signal_seconds or None}
        if self.cluster == "slurm":
            parameters.update({k: v for k, v in slurm_only.items() if v is not None})
        return parameters

    def describe(self) -> list[str]:
        """The ``#SBATCH`` lines and setup commands a job gets (what ``--dry-run`` prints)."""
        hours, minutes = divmod(self.time, 60)
        lines = [f"--time={hours}:{minutes:02d}:00", f"--cpus-per-task={self.cpus_per_job}"]
        if self.gpus_per_job:
            lines.append(f"--gpus-per-node={self.gpus_per_job}")
        for flag, value in (("partition", self.partition), ("account", self.account),
                            ("qos", self.qos), ("constraint", self.constraint)):
            if value:
                lines.append(f"--{flag}={value}")
        if self.mem_gb is not None:
            lines.append(f"--mem={int(self.mem_gb * 1024)}M")
        if self.signal_seconds:
            lines.append(f"--signal=USR2@{self.signal_seconds}")
        lines += list(self.sbatch)
        return ([f"#SBATCH {line}" for line in lines]
                + [f"setup: {command}" for command in self.setup])
