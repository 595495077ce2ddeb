"""The settings table: every key the agent reads, its type, default and bounds.

The dataclasses below *are* the declarative table.  Each field's
``metadata`` carries ``help`` (one line for the docs and the shipped YAML)
and optional bounds: ``min``/``max`` (inclusive), ``choices``, ``pattern``
(``re.fullmatch``); bounds of a list field apply to each element.  Other
metadata: ``env`` (an environment variable that, when set and non-empty,
replaces the default; a value in a file still wins), ``octal`` (docs show
the default in octal), ``lower_is_worse`` (on a threshold).  A dataclass may
define ``validate(self) -> None`` raising ``ConfigError`` for cross-field
rules; its ``key`` is relative to that dataclass (``"crit"``,
``"memory_available_bytes.crit"``).  Every field needs a default.
``agent.configload`` walks these classes to load YAML strictly: an unknown
key, a wrong type or an out-of-range value raises
:class:`agent.errors.ConfigError` naming the dotted key path and what is
allowed, and ``vm-agent serve`` exits 78 (EX_CONFIG).

Units: sizes in bytes, durations in seconds, percentages 0-100.
GB/MB in the defaults are decimal (10^9 / 10^6 bytes), as Docker and df -H count.
"""

# _f/_sub/_t return dataclasses.field(...) objects, not shared mutable defaults:
# ruff: noqa: RUF009

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from agent.errors import ConfigError

ABSOLUTE_PATH = r"/.*"  # settings that name a path must be absolute

def _f(default: Any, help: str, **bounds: Any) -> Any:
    """A settings-table field: default, one-line help, optional bounds."""
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"help": help, **bounds})


def _sub(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


def default_docker_host() -> str:
    """``DOCKER_HOST`` when set, else the standard socket ``unix:///var/run/docker.sock``."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class ServerConfig:
    socket: str = _f("/run/vm-agent/agent.sock",
                     "Unix socket path when run by hand (under systemd the socket unit decides)",
                     pattern=ABSOLUTE_PATH)
    socket_mode: int = _f(0o660, "mode of a socket the agent binds itself", min=0, max=0o777,
                          octal=True)
    max_connections: int = _f(64, "concurrent client connections; more are refused with 429",
                              min=1, max=4096)
    client_timeout_s: float = _f(10.0, "seconds a client may take to send a whole request "
                                 "(and idle between keep-alive requests)", min=0.1, max=600)
    shutdown_timeout_s: float = _f(10.0, "on SIGTERM, seconds in-flight requests get to finish",
                                   min=0, max=300)


@dataclass(frozen=True)
class RoleConfig:
    uids: tuple[int, ...] = _f((), "numeric user ids in this role", min=0)
    gids: tuple[int, ...] = _f((), "numeric group ids in this role (primary or supplementary)",
                               min=0)
    groups: tuple[str, ...] = _f((), "group names in this role, resolved at start-up; "
                                 "a missing group is logged and ignored")


@dataclass(frozen=True)
class AccessConfig:
    viewer: RoleConfig = field(
        default_factory=lambda: RoleConfig(groups=("vm-agent",)),
        metadata={"help": "peers that may run every GET command"})
    operator: RoleConfig = field(
        default_factory=lambda: RoleConfig(groups=("vm-agent-ops",)),
        metadata={"help": "peers that may run every command; uid 0 is always operator"})


@dataclass(frozen=True)
class SamplingConfig:
    interval_s: float = _f(10.0, "seconds between background host samples", min=1, max=3600)
    cpu_window_s: float = _f(1.0, "window over which steal and iowait are measured "
                             "(two /proc/stat reads this far apart)", min=0.1, max=60)
    disks: tuple[str, ...] = _f(("/",), "mount points whose usage is sampled",
                                pattern=ABSOLUTE_PATH)
    proc_root: str = _f("/proc", "where procfs is mounted (tests point it at a temp tree)",
                        pattern=ABSOLUTE_PATH)


@dataclass(frozen=True)
class Threshold:
    """``warn``/``crit`` limits of one metric; ``null`` disables that level.

    For metrics where higher is worse a value strictly above ``warn`` is WARN
    and strictly above ``crit`` is CRIT; for ``memory_available_bytes`` (lower
    is worse) strictly below.
    """

    warn: float | None = _f(None, "WARN limit (null: never WARN)", min=0)
    crit: float | None = _f(None, "CRIT limit (null: never CRIT)", min=0)


def _t(warn: float | None, crit: float | None, help: str, **flags: Any) -> Any:
    return field(default_factory=lambda: Threshold(warn, crit), metadata={"help": help, **flags})


@dataclass(frozen=True)
class ThresholdsConfig:
    steal_percent: Threshold = _t(5, 15, "CPU steal, percent 0-100 (roadmap: >5 WARN, >15 CRIT)")
    iowait_percent: Threshold = _t(20, 50, "CPU iowait, percent 0-100")
    swap_used_bytes: Threshold = _t(1.5e9, 4e9, "swap used = SwapTotal - SwapFree, bytes "
                                    "(roadmap: > 1.5 GB WARN)")
    swap_cached_bytes: Threshold = _t(200e6, None, "SwapCached, bytes: an early sign of memory "
                                      "pressure (roadmap: > 200 MB WARN)")
    memory_available_bytes: Threshold = _t(1e9, 500e6, "MemAvailable, bytes; lower is worse",
                                           lower_is_worse=True)
    disk_used_percent: Threshold = _t(80, 90, "used / (used + available) per mount, percent")
    load1_per_core: Threshold = _t(1.5, 3.0, "1-minute load average divided by cores")
    unhealthy_containers: Threshold = _t(0, 5, "count of containers whose health is unhealthy")
    docker_unavailable: str = _f("WARN", "level of docker_available when Docker cannot be "
                                 "reached (OK on a host that runs no Docker)",
                                 choices=("OK", "WARN", "CRIT"))

    @classmethod
    def lower_is_worse(cls, metric: str) -> bool:
        """True for metrics where a value *below* the limit is bad (``memory_available_bytes``)."""
        return any(f.name == metric and f.metadata.get("lower_is_worse", False)
                   for f in fields(cls))

    def validate(self) -> None:
        """Raise ``ConfigError`` unless each ``crit`` lies beyond its ``warn`` (worse side)."""
        for f in fields(self):
            t = getattr(self, f.name)
            if not isinstance(t, Threshold) or t.warn is None or t.crit is None:
                continue
            lower = self.lower_is_worse(f.name)
            if (t.crit >= t.warn) if lower else (t.crit <= t.warn):
                side = "below" if lower else "above"
                raise ConfigError(f"{f.name}.crit", f"crit ({t.crit:g}) must be {side} warn "
                                  f"({t.warn:g}): {'lower' if lower else 'higher'} is worse")


@dataclass(frozen=True)
class DockerConfig:
    host: str = _f("unix:///var/run/docker.sock",
                   "Docker endpoint; default DOCKER_HOST when set, else the standard socket",
                   pattern=r"(unix|tcp|ssh|npipe)://.+", env="DOCKER_HOST")
    timeout_s: float = _f(5.0, "timeout of one Docker API call, seconds", min=0.5, max=300)
    cgroup_root: str = _f("/sys/fs/cgroup", "where the cgroup filesystem is mounted; container "
                          "memory use is read there (v1 or v2), not from Docker's stats API",
                          pattern=ABSOLUTE_PATH)


@dataclass(frozen=True)
class ScheduleConfig:
    """When each job runs: 5-field cron expressions (``man 5 crontab``) in ``timezone``.

    Next runs follow Linux cron (agent/schedule.py): day-of-month and
    day-of-week are OR-ed when both are restricted; across DST a fixed-time
    job runs once (fall-back) and never zero times (spring-forward).  The
    shipped systemd timers (systemd/vm-agent-*.timer) encode the defaults in
    UTC; a changed expression needs the timer changed to match (a drop-in).
    """

    timezone: str = _f("UTC", "IANA time zone the expressions are read in (UTC, Europe/Berlin)")
    cleanup_standard: str = _f("30 3 * * *", "cleanup, standard mode (daily 03:30)")
    cleanup_weekly: str = _f("0 4 * * 0", "cleanup, weekly mode (Sunday 04:00)")
    cleanup_monthly: str = _f("30 4 1 * *", "cleanup, monthly mode (the 1st, 04:30)")
    watchdog: str = _f("*/10 * * * *", "container watchdog pass (every 10 minutes)")
    backup_repair: str = _f("*/10 * * * *", "git backup repair (every 10 minutes)")
    healthcheck: str = _f("0 7 * * *", "daily health alert (07:00)")
    digest: str = _f("0 8 * * 1", "weekly digest (Monday 08:00)")
    legacy_crontabs: tuple[str, ...] = _f(
        ("/var/spool/cron/crontabs/root", "/etc/crontab"),
        "crontabs searched for the legacy '# bytelyst-vm-maintenance' block shown by GET "
        "/v1/jobs (a file named crontab or in cron.d is read in system format, with a user "
        "field)", pattern=ABSOLUTE_PATH)

    def validate(self) -> None:
        """Raise ``ConfigError`` (key ``cleanup_weekly``, ``timezone``, ...) for a bad value."""
        from agent.schedule import validate_schedule

        validate_schedule(self)


@dataclass(frozen=True)
class JobsConfig:
    keep_days: float = _f(90.0, "run records older than this many days are pruned", min=1,
                          max=3650)
    keep_runs: int = _f(500, "at most this many run records are kept per job", min=1,
                        max=100000)
    step_timeout_s: float = _f(3600.0, "a job step still running after this many seconds is "
                               "abandoned and recorded as failed", min=1, max=86400)
    disk_timeout_s: float = _f(10.0, "timeout of one disk-usage read before/after a run, "
                               "seconds", min=0.1, max=300)
    shutdown_grace_s: float = _f(5.0, "on SIGTERM, seconds a running job gets before it is "
                                 "cancelled and recorded as failed/interrupted", min=0, max=300)
    schedule: ScheduleConfig = _sub(ScheduleConfig, "when each job runs (cron expressions)")


#: Docker's container-name rule (``daemon/names``), used wherever a name arrives.
CONTAINER_NAME_PATTERN = r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}"


@dataclass(frozen=True)
class WatchdogConfig:
    """The container watchdog: restarts running containers Docker reports ``unhealthy``."""

    failures_before_restart: int = _f(3, "restart only when FailingStreak is at least this "
                                      "(and the newest health-log entries agree)", min=1, max=100)
    max_restarts: int = _f(3, "restart budget: at most this many restarts per container per "
                           "window_s; past it the watchdog gives up (one alert)", min=1, max=100)
    window_s: float = _f(3600.0, "the restart budget's window, seconds", min=60, max=7 * 86400)
    protected: tuple[str, ...] = _f(("ollama",), "container names never restarted, by the "
                                    "watchdog or the API (403); Ollama's container is protected "
                                    "unless removed from this list",
                                    pattern=CONTAINER_NAME_PATTERN)
    stop_timeout_margin_s: float = _f(30.0, "a restart may take the container's own StopTimeout "
                                      "(default 10 s) plus this many seconds", min=0, max=3600)
    backstop_interval_s: float = _f(600.0, "seconds between in-process backstop passes (events "
                                    "may be lost)", min=5, max=86400)
    events: bool = _f(True, "follow Docker's event stream (health_status, oom) so a pass runs "
                      "within seconds of a health change")


@dataclass(frozen=True)
class IoConfig:
    """Per-container disk writes (``GET /v1/io``), read from cgroups at ``docker.cgroup_root``."""

    warn_bytes_per_day: float = _f(20e9, "a container whose projected writes (rate over the "
                                   "sampling window x 86400) are above this many bytes per "
                                   "day is WARN", min=0)
    crit_bytes_per_day: float = _f(40e9, "a container whose projected writes are above this "
                                   "many bytes per day is CRIT", min=0)

    def validate(self) -> None:
        """Raise ``ConfigError`` unless ``crit_bytes_per_day`` is above ``warn_bytes_per_day``."""
        if self.crit_bytes_per_day <= self.warn_bytes_per_day:
            raise ConfigError("crit_bytes_per_day", f"crit ({self.crit_bytes_per_day:g}) must "
                              f"be above warn ({self.warn_bytes_per_day:g})")


#: The cleanup job's step kinds (agent/jobs/cleanup.py), in the order a mode usually runs them.
CLEANUP_STEPS = ("docker_build_cache", "docker_dangling_images", "docker_aged_images",
                 "journal_vacuum", "apt", "pnpm_store", "path_retention")
CLEANUP_MODES = ("standard", "weekly", "monthly")


@dataclass(frozen=True)
class CleanupModes:
    """The steps each cleanup mode runs, in order (a step may appear in several modes)."""

    standard: tuple[str, ...] = _f(("docker_build_cache", "docker_dangling_images",
                                    "path_retention"), "daily steps", choices=CLEANUP_STEPS)
    weekly: tuple[str, ...] = _f(("docker_build_cache", "docker_dangling_images",
                                  "docker_aged_images", "journal_vacuum", "apt", "pnpm_store",
                                  "path_retention"), "weekly steps", choices=CLEANUP_STEPS)
    monthly: tuple[str, ...] = _f(CLEANUP_STEPS, "monthly steps", choices=CLEANUP_STEPS)

    def validate(self) -> None:
        """Raise ``ConfigError`` when a mode lists a step twice (step names are unique)."""
        for mode in CLEANUP_MODES:
            steps = getattr(self, mode)
            if len(set(steps)) != len(steps):
                raise ConfigError(mode, f"a step is listed twice: {', '.join(steps)}")


@dataclass(frozen=True)
class PathRetentionRule:
    """Regular files under ``root`` whose path relative to it matches a glob and whose
    mtime is older than ``days`` are deleted; symbolic links are never followed."""

    root: str = _f("", "absolute folder the rule is confined to", pattern=r"/.*")
    globs: tuple[str, ...] = _f(("*.log",), "fnmatch patterns on the path relative to root "
                                "('*' also matches '/': '*.log' matches at any depth)")
    days: float = _f(14.0, "minimum age (mtime) in days", min=0, max=36500)

    def validate(self) -> None:
        """Raise ``ConfigError`` for a rule without an absolute root or without globs."""
        if not self.root.startswith("/"):
            raise ConfigError("root", f"an absolute folder is required, got {self.root!r}")
        if not self.globs:
            raise ConfigError("globs", "at least one glob is required")


@dataclass(frozen=True)
class CleanupConfig:
    """The cleanup job: what each mode deletes.  Never volumes, containers or
    ``docker system prune``."""

    modes: CleanupModes = _sub(CleanupModes, "steps per mode (standard, weekly, monthly)")
    build_cache_age_s: float = _f(7 * 86400.0, "docker_build_cache: builder cache unused for "
                                  "longer than this many seconds (BuildKit's 'until' filter; above "
                                  "9223372036, Docker's longest duration, that maximum)",
                                  min=0)
    build_cache_all_in: tuple[str, ...] = _f(("monthly",), "modes in which docker_build_cache "
                                             "removes all unused build cache, whatever its age",
                                             choices=CLEANUP_MODES)
    image_age_days: float = _f(30.0, "docker_aged_images: images created more than this many "
                               "days ago (Docker counts from creation, not last use)",
                               min=0, max=36500)
    keep_images: tuple[str, ...] = _f((), "docker_aged_images never removes an image with a "
                                      "repo:tag matching one of these fnmatch patterns "
                                      "('ollama/*', 'postgres:16*')")
    keep_labels: tuple[str, ...] = _f(("vm-agent.keep",), "... nor an image carrying one of "
                                      "these labels ('key' or 'key=value')")
    journal_vacuum_size_bytes: int = _f(1_000_000_000, "journal_vacuum: --vacuum-size, bytes "
                                        "(0: no size limit)", min=0)
    journal_vacuum_time_s: float = _f(30 * 86400.0, "journal_vacuum: --vacuum-time, seconds "
                                      "(0: no age limit)", min=0)
    journal_directory: str = _f("", "journal_vacuum: vacuum only this folder (--directory); "
                                "empty: the system journal (/var/log/journal, /run/log/journal)",
                                pattern=r"(/.*)?")
    apt_autoremove_in: tuple[str, ...] = _f((), "modes in which the apt step also runs apt-get "
                                            "autoremove (opt-in: it removes packages, old "
                                            "kernels included, and needs write access to /usr "
                                            "and /boot that vm-agent.service does not grant; "
                                            "see docs/OPERATIONS.md)", choices=CLEANUP_MODES)
    apt_cache_dir: str = _f("/var/cache/apt", "apt's Dir::Cache (apt-get clean empties its "
                            "archives/ and the package caches)", pattern=ABSOLUTE_PATH)
    path_retention: tuple[PathRetentionRule, ...] = _f((), "path_retention rules "
                                                       "{root, globs, days}")
    docker_timeout_s: float = _f(600.0, "timeout of one Docker call of a cleanup step (a prune "
                                 "may take minutes), seconds", min=1, max=86400)
    tool_timeout_s: float = _f(900.0, "timeout of journalctl, apt-get or pnpm, seconds", min=1,
                               max=86400)


GIT_NAME = r"[A-Za-z0-9][A-Za-z0-9._/-]*"  # a remote or branch name (no options, no "..")


@dataclass(frozen=True)
class BackupRepo:
    """One git work tree the backup-repair job keeps in line with ``remote``/``branch``."""

    path: str = _f("", "absolute path of the repo's work tree", pattern=ABSOLUTE_PATH)
    remote: str = _f("origin", "the remote to fetch from (and push to)", pattern=GIT_NAME)
    branch: str = _f("main", "the branch checked out here and on the remote", pattern=GIT_NAME)
    push: bool = _f(False, "push local commits the remote lacks (no force); false: report them")

    def validate(self) -> None:
        """Raise ``ConfigError`` for a repo without an absolute path or with '..' in a name."""
        if not self.path.startswith("/"):
            raise ConfigError("path", f"an absolute folder is required, got {self.path!r}")
        for key in ("remote", "branch"):
            if ".." in getattr(self, key):
                raise ConfigError(key, "'..' is not allowed in a git name")


@dataclass(frozen=True)
class BackupRepairConfig:
    """The backup-repair job: fetch, classify, fast-forward/push/rebase/reset per repo."""

    repos: tuple[BackupRepo, ...] = _f((), "repos {path, remote, branch, push}")
    git_timeout_s: float = _f(120.0, "timeout of one git command (fetch, push, rebase), seconds",
                              min=1, max=3600)

    def validate(self) -> None:
        """Raise ``ConfigError`` when a path is listed twice (one step per repo)."""
        paths = [r.path for r in self.repos]
        if len(set(paths)) != len(paths):
            raise ConfigError("repos", f"a repo path is listed twice: {', '.join(paths)}")


#: Alert kinds that are notifications in themselves (no OK event ever follows them).
ONE_OFF_ALERT_KINDS = ("watchdog.restart_ok", "watchdog.restart_failed", "watchdog.gave_up",
                       "container.oom", "job.failed", "backup.conflict")


@dataclass(frozen=True)
class TelegramConfig:
    """Delivery of notifications to Telegram (Bot API ``sendMessage``)."""

    api_base: str = _f("https://api.telegram.org", "Bot API base URL (a self-hosted Bot API "
                       "server works)", pattern=r"https?://[^\s/]+(/\S*)?")
    chat_id: str = _f("", "chat id (a number, or @channelname); empty: delivery off, "
                      "messages wait in the outbox", pattern=r"(-?[0-9]+|@[A-Za-z0-9_]{5,32})?")
    token_file: str = _f("", "file holding the bot token, used when the systemd credential "
                         "telegram-token ($CREDENTIALS_DIRECTORY) is absent; empty: none",
                         pattern=r"(/.*)?")
    timeout_s: float = _f(10.0, "timeout of one sendMessage request, seconds", min=1, max=120)
    retry_min_s: float = _f(10.0, "first retry delay after a failed send, seconds (doubles "
                            "per attempt)", min=1, max=3600)
    retry_max_s: float = _f(1800.0, "longest retry delay, seconds (a 429's retry_after is "
                            "honoured up to max(this, 3600))", min=1, max=86400)
    max_attempts: int = _f(20, "failed sends after which a message is parked as dead (never "
                           "retried, later messages go on)", min=1, max=1000)
    give_up_after_s: float = _f(86400.0, "a message still unsent this many seconds after it "
                                "was queued is parked as dead at its next failure", min=60,
                                max=30 * 86400)


@dataclass(frozen=True)
class AlertsConfig:
    """Which alert events become notifications (agent/notify/rules.py)."""

    cooldown_s: float = _f(3600.0, "at most one notification per (kind, subject) in this many "
                           "seconds; a level change held back is sent when it ends", min=0,
                           max=7 * 86400)
    one_off_kinds: tuple[str, ...] = _f(ONE_OFF_ALERT_KINDS, "kinds notified on every event "
                                        "(cooldown still applies); other kinds notify on level "
                                        "changes only", pattern=r"[a-z0-9_.]+")
    startup_grace_s: float = _f(300.0, "at start-up, unprocessed events older than this many "
                                "seconds update the state silently (no burst of old alerts)",
                                min=0, max=86400)
    poll_interval_s: float = _f(5.0, "seconds between checks for new alert events and due "
                                "outbox messages", min=0.1, max=600)
    host_name: str = _f("", "host name every message carries; empty: the system host name",
                        pattern=r"[^\x00-\x1f\x7f]{0,253}")


@dataclass(frozen=True)
class PrometheusConfig:
    """Where the weekly digest and the trend charts (``GET /v1/metrics/trend/{kind}``) read
    node_exporter's series (``GET /api/v1/query``, ``/api/v1/query_range``)."""

    url: str = _f("", "base URL of a Prometheus that scrapes this VM's node_exporter "
                  "(http://127.0.0.1:9090); empty: not configured, the digest uses the agent's "
                  "own hourly samples and trends answer 503", pattern=r"(https?://\S+)?")
    selector: str = _f("", "extra label matchers added to every query, e.g. "
                       "instance=\"vm1:9100\" (empty: none)",
                       pattern=r"[^{}]{0,200}")
    timeout_s: float = _f(10.0, "timeout of one Prometheus query, seconds", min=0.5, max=120)


@dataclass(frozen=True)
class MetricsConfig:
    """The agent's own metrics, written for node_exporter's textfile collector."""

    textfile: str = _f("/var/lib/prometheus/node-exporter/vm-agent.prom", "file the agent "
                       "writes its metrics to (atomically: a temporary file renamed over it); "
                       "must end in .prom; empty: off", pattern=r"(/\S*\.prom)?")
    interval_s: float = _f(60.0, "seconds between two writes of the textfile", min=5,
                           max=3600)


@dataclass(frozen=True)
class OllamaConfig:
    """The Ollama panel (``/v1/ollama/*``).  The agent never sets a memory limit on Ollama
    and the watchdog never restarts it while ``ollama`` is in ``watchdog.protected``."""

    url: str = _f("http://127.0.0.1:11434", "base URL of Ollama's REST API",
                  pattern=r"https?://\S+")
    timeout_s: float = _f(10.0, "timeout of one Ollama call (list, ps, unload), seconds",
                          min=0.5, max=120)
    load_timeout_s: float = _f(300.0, "timeout of a model load (reading GBs from disk), "
                               "seconds", min=1, max=3600)
    free_floor_bytes: int = _f(1_500_000_000, "a load that would leave less MemAvailable than "
                               "this is refused (409) unless forced; level CRIT", min=0)
    warn_free_bytes: int = _f(3_000_000_000, "a load that would leave less than this is WARN",
                              min=0)
    dev_root: str = _f("/dev", "where device nodes are looked up for GPU visibility",
                       pattern=ABSOLUTE_PATH)

    def validate(self) -> None:
        """Raise ``ConfigError`` unless ``warn_free_bytes`` is at least ``free_floor_bytes``."""
        if self.warn_free_bytes < self.free_floor_bytes:
            raise ConfigError("warn_free_bytes", f"warn_free_bytes ({self.warn_free_bytes}) "
                              f"must be at least free_floor_bytes ({self.free_floor_bytes})")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = _sub(ServerConfig, "the protocol server")
    access: AccessConfig = _sub(AccessConfig, "who may do what (SO_PEERCRED uid/gid -> role)")
    sampling: SamplingConfig = _sub(SamplingConfig, "the background host sampler")
    thresholds: ThresholdsConfig = _sub(ThresholdsConfig, "OK/WARN/CRIT limits per metric")
    docker: DockerConfig = _sub(DockerConfig, "the Docker engine")
    jobs: JobsConfig = _sub(JobsConfig, "the job runner: run history retention, step timeout")
    watchdog: WatchdogConfig = _sub(WatchdogConfig, "the health-aware container watchdog")
    io: IoConfig = _sub(IoConfig, "per-container disk-write rates and their WARN/CRIT limits")
    cleanup: CleanupConfig = _sub(CleanupConfig, "the cleanup job's modes, steps and limits")
    prometheus: PrometheusConfig = _sub(PrometheusConfig, "where the weekly digest and the "
                                        "trend charts read node_exporter's series (optional)")
    metrics: MetricsConfig = _sub(MetricsConfig, "the agent's own metrics for "
                                  "node_exporter's textfile collector")
    telegram: TelegramConfig = _sub(TelegramConfig, "notifications to Telegram (Bot API)")
    alerts: AlertsConfig = _sub(AlertsConfig, "alert events -> notifications: transitions, "
                                "cooldown, quiet start-up")
    ollama: OllamaConfig = _sub(OllamaConfig, "the Ollama panel: where Ollama answers, the "
                                "free-RAM floor for loads")
    backup_repair: BackupRepairConfig = _sub(BackupRepairConfig, "the git backup-repair job's "
                                             "repos")
    state_dir: str = _f("/var/lib/vm-agent", "where the hold, the run history and the "
                        "watchdog state are kept", pattern=ABSOLUTE_PATH)
    run_dir: str = _f("/run/vm-agent", "runtime files: job locks", pattern=ABSOLUTE_PATH)
