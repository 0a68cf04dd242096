"""Every setting in one frozen object, read once from the environment (prefix ``OMNISEG_``).

Local development and production use the same names: ``omniseg dev up`` writes the local values to
``omniseg.env`` in its state folder (``OMNISEG_DEV_STATE_DIR``, default ``.omniseg/``), which every
command reads when present; real environment variables always win.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.domain.consent import ConsentPolicy
from streams.domain.segments.inactivity import InactivityPolicy

Channel = Literal["web", "app", "email", "store"]
CHANNELS: tuple[Channel, ...] = ("web", "app", "email", "store")

DEFAULT_STATE_DIR = Path(".omniseg")


def env_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """The settings file every command reads: ``OMNISEG_ENV_FILE`` when set, else ``omniseg.env`` in the
    local stack's state folder (``OMNISEG_DEV_STATE_DIR``), where ``omniseg dev up`` writes it."""
    environ = os.environ if environ is None else environ
    if environ.get("OMNISEG_ENV_FILE"):
        return Path(environ["OMNISEG_ENV_FILE"])
    return Path(environ.get("OMNISEG_DEV_STATE_DIR") or DEFAULT_STATE_DIR) / "omniseg.env"


# Read once at import, like every setting: the file `dev up` of the same state folder wrote.
ENV_FILE = str(env_file_path())


_ORIGIN = re.compile(r"https?://[^/\s?#@]+")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


class Source(BaseModel):
    """One sending source: its write key maps to a name and the channel it feeds.

    ``allowed_origins`` are the web pages (``scheme://host[:port]``, as browsers send ``Origin``) whose
    browsers may send with this source's key; ``"*"`` allows every page. None by default: a browser
    call carrying this key is refused (403) until its page's origin is listed. Calls without an
    ``Origin`` header (servers, apps) are not affected.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=100)
    channel: Channel
    allowed_origins: tuple[str, ...] = ()

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for raw in value:
            origin = raw.strip().rstrip("/").lower()
            scheme = origin.partition(":")[0]
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"allowed origin {raw!r} is not scheme://host[:port] (no path), nor '*'")
            default_port = _DEFAULT_PORTS.get(scheme)
            if default_port and origin.endswith(default_port):
                origin = origin[: -len(default_port)]  # browsers leave the default port out
            out.append(origin)
        return tuple(dict.fromkeys(out))

    def allows_origin(self, origin: str) -> bool:
        """Whether a browser page of ``origin`` (its ``Origin`` header) may send with this source."""
        return origin in self.allowed_origins or "*" in self.allowed_origins


class Settings(BaseSettings):
    """All configuration. Instances are immutable; use :func:`get_settings` for the process-wide one."""

    model_config = SettingsConfigDict(
        env_prefix="OMNISEG_",
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_partitions: int = Field(default=4, ge=1)
    kafka_replication: int = Field(default=1, ge=1)
    kafka_session_timeout_ms: int = Field(default=6000, ge=1000)
    # How long a transactional stage newly assigned its log waits before it fences the earlier owner
    # (streams/kafka/runtime.py, ``StageRuntime._handover_s``).
    kafka_handover_ms: int = Field(default=6000, ge=0)
    # How long the pipeline's producers gather records into one batch: fewer, larger produce requests
    # (docs/decisions/0006-producer-pacing.md). Each hop's latency grows by at most this much.
    kafka_linger_ms: int = Field(default=50, ge=0, le=1000)
    topic_prefix: str = ""

    # ClickHouse (native protocol)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    clickhouse_database: str = "omniseg"
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    # A ClickHouse cluster of one shard and several replicas (docs/clickhouse_cluster.md). With a
    # cluster name from the servers' remote_servers, `omniseg migrate` creates every table as a
    # replicated `<name>_local` table on every node ON CLUSTER with a Distributed table `<name>` in
    # front, and the sinks insert into the `_local` table of the server they connect to. Empty: plain
    # tables on one server. The replicated tables live under <zookeeper path>/<database>/<table>_local.
    clickhouse_cluster: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    clickhouse_zookeeper_path: str = Field(default="/clickhouse/tables/{shard}", pattern=r"^/[^']*$")

    # Read API (``omniseg api serve``): person lookup. Tokens are comma-separated bearer tokens; with
    # none set, the API refuses to start.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8090, ge=1, le=65535)
    api_tokens: SecretStr = SecretStr("")
    # Audience pull API (same server): the destinations' YAML files, read again when one changes.
    destinations_dir: Path = Path(__file__).resolve().parent.parent / "deploy" / "destinations"
    # Deltas newer than ClickHouse's are read from ``audiences.deltas`` by the API itself, so a change is
    # pullable once the audience writer commits it (docs/decisions/0019-newest-deltas-from-the-topic.md);
    # off: deltas come from ClickHouse alone, one sink batch later.
    api_delta_tail: bool = True
    # Use cases (``omniseg usecases``): their YAML definitions, and the segment definitions their
    # audiences are checked against.
    usecases_dir: Path = Path(__file__).resolve().parent.parent / "deploy" / "usecases"
    segments_dir: Path = Path(__file__).resolve().parent.parent / "deploy" / "segments"
    # Where ``omniseg usecases report`` writes the HTML pages (relative to the working directory).
    reports_dir: Path = Path("omniseg-reports")

    # Collector
    collector_host: str = "127.0.0.1"
    collector_port: int = 8088
    sources: dict[str, Source] = Field(default_factory=dict)
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    # Write keys are public in browser SDKs, so what one request or one key can cost is bounded.
    # Objects and arrays nested in one call, checked before anything recurses into it; at most 200,
    # which keeps every later step (orjson writes 254 levels, Python recurses ~1000 frames) in range.
    max_event_depth: int = Field(default=64, ge=1, le=200)
    max_batch_items: int = Field(default=2_500, ge=1)
    # Calls per second per write key (a batch counts its items), with bursts of twice that; 0: no limit.
    collector_rate_limit_per_s: float = Field(default=10_000.0, ge=0)
    produce_timeout_s: float = 10.0

    # History sink (and the identity and segment sinks: the ClickHouse writers of `omniseg worker`)
    sink_enabled: bool = True
    sink_group: str = "omniseg-history-sink"
    sink_batch_size: int = Field(default=20_000, ge=1)
    sink_flush_interval_s: float = Field(default=0.5, gt=0)
    sink_retry_max_backoff_s: float = Field(default=30.0, gt=0)

    # Identity resolution (streams/stages/identity/resolver.py); groups derive from identity_group
    identity_enabled: bool = True  # run the resolver and link writer in `omniseg worker`
    identity_rules_path: Path = Path(__file__).resolve().parent.parent / "deploy" / "identity.yaml"
    identity_group: str = "omniseg-identity"
    identity_batch_size: int = Field(default=5_000, ge=1)

    # Segments (streams/stages/segments/stage.py) and the product catalog
    segments_enabled: bool = True  # run the segment stage in `omniseg worker`
    segments_group: str = "omniseg-segments"
    segments_batch_size: int = Field(default=5_000, ge=1)
    # Profiles touched since the last flush go to segments.state, then offsets are committed. A
    # profile touched several times in one interval is written once, so a longer interval costs less
    # (docs/decisions/0008-segment-state-at-checkpoints.md). A crash replays at most this much input
    # (skipped by profiles whose state has it; changes repeat with the same ids).
    segments_state_flush_s: float = Field(default=5.0, gt=0)
    # Window expiry timers are checked this often (invariant 5: within 1 s).
    segments_timer_interval_s: float = Field(default=0.2, gt=0, le=1.0)
    # Local time for hour/weekday/month/season when an event has no context.timezone.
    segments_timezone: str = "UTC"
    segments_hemisphere: Literal["north", "south"] = "north"
    # Retention of inactive persons (docs/retention.md, "Inactive persons"): a person with no event for
    # this many days exits every segment (trigger `retention`) and its profile is removed from the
    # segment stage's state; its history stays in ClickHouse. 0 keeps every profile (the default).
    # Fractions are allowed (0.5 = 12 hours).
    segments_inactive_days: float = Field(default=0.0, ge=0)
    # Whom it removes: `anonymous` persons (no contact identifier: email, phone, userId, crmId,
    # loyaltyCard, espSubscriberId, advertisingId) or `all`.
    segments_inactive_applies_to: Literal["anonymous", "all"] = "anonymous"

    # Keyed state on local disk (docs/state.md). Empty: every stage keeps its state in memory and
    # restores it from its changelog topic at start. A directory: each stage keeps it in RocksDB under
    # it (one sub-directory per stage and group) with only a cache of hot entries in memory, and a
    # restart on the same disk reads only the changelog records written since its last checkpoint.
    state_dir: Path | None = None
    # Profiles the segment stage keeps decoded in memory when state_dir is set.
    segments_cache_profiles: int = Field(default=200_000, ge=1_000)
    # Identifier -> person entries the resolver and the link writer keep in memory when state_dir is set.
    identity_cache_identifiers: int = Field(default=1_000_000, ge=1_000)

    # Consent (streams/domain/consent.py): the purposes omniseg knows, the default of each for a person
    # who never stated it (absent: not granted, so advertising is opt-in), and consent-manager category
    # names read as a purpose (e.g. {"marketing": "email"}). JSON in the environment, e.g.
    # OMNISEG_CONSENT_DEFAULTS='{"analytics": true}'.
    consent_purposes: tuple[str, ...] = (
        "advertising",
        "email",
        "personalisation",
        "analytics",
        "ad_user_data",
        "ad_personalization",
    )
    consent_defaults: dict[str, bool] = Field(default_factory=dict)
    consent_aliases: dict[str, str] = Field(default_factory=dict)
    # Ad-platform audiences (docs/decisions/0013-audiences-for-ad-platforms.md)
    audiences_enabled: bool = True  # run the audience writer in `omniseg worker`
    audiences_group: str = "omniseg-audiences"
    # The audiences sink inserts at least this often while deltas arrive. The pull API serves newer
    # deltas from the topic (api_delta_tail), so longer batches cost no latency and fewer parts cost
    # ClickHouse fewer merges.
    audiences_sink_flush_interval_s: float = Field(default=1.0, gt=0)

    # Retention of raw events in ClickHouse (docs/retention.md): events, event_persons and invalid_events
    # rows older than this many days go, after the lifetime KPIs' rollups took them in (0 keeps them
    # forever). A worker with the history sink runs it every ``events_retention_interval_h`` hours.
    events_retention_days: int = Field(default=0, ge=0, le=36500)
    events_retention_interval_h: float = Field(default=24.0, gt=0)

    # Worker supervision (streams/kafka/hosting.py, streams/kafka/health.py). A stage with records
    # waiting and none handled for ``stage_stall_s`` (or without partitions while its group's offsets
    # stand still) rejoins its group; a stage that fails more than ``stage_restart_max`` times within
    # ``stage_restart_window_s`` ends the worker. Stopping waits at most ``worker_stop_timeout_s``.
    stage_stall_s: float = Field(default=60.0, gt=0)
    stage_restart_max: int = Field(default=5, ge=0)
    stage_restart_window_s: float = Field(default=600.0, gt=0)
    worker_stop_timeout_s: float = Field(default=10.0, gt=0)
    # Prometheus text metrics of the worker's stages at http://127.0.0.1:<port>/metrics (off when unset).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    # Local stack (``omniseg dev``)
    dev_state_dir: Path = DEFAULT_STATE_DIR
    dev_kafka_port: int = 19092
    dev_clickhouse_port: int = 19000
    dev_clickhouse_http_port: int = 18123
    dev_ready_timeout_s: float = 60.0

    @field_validator("state_dir", mode="before")
    @classmethod
    def _no_state_dir_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sources")
    @classmethod
    def _write_keys_not_blank(cls, value: dict[str, Source]) -> dict[str, Source]:
        for key in value:
            if len(key.strip()) < 8:
                raise ValueError(f"write key {key[:3]!r}… is shorter than 8 characters")
        return value

    @model_validator(mode="after")
    def _stall_longer_than_checkpoints(self) -> Settings:
        # A stage without partitions judges its group by its committed offsets, which the segment
        # stage moves once per checkpoint: a shorter stall limit would restart healthy stages.
        if self.stage_stall_s <= 2 * self.segments_state_flush_s:
            raise ValueError(
                f"stage_stall_s ({self.stage_stall_s:g}) must be more than twice segments_state_flush_s "
                f"({self.segments_state_flush_s:g}): offsets are committed once per checkpoint"
            )
        return self

    @model_validator(mode="after")
    def _retention_not_on_a_cluster(self) -> Settings:
        # The retention folds and deletes alter the raw tables, which ClickHouse refuses through the
        # Distributed tables of a cluster (docs/clickhouse_cluster.md).
        if self.clickhouse_cluster and self.events_retention_days > 0:
            raise ValueError(
                "events_retention_days does not run on a ClickHouse cluster yet "
                f"(clickhouse_cluster={self.clickhouse_cluster}): set OMNISEG_EVENTS_RETENTION_DAYS=0 "
                "(docs/clickhouse_cluster.md)"
            )
        return self

    @model_validator(mode="after")
    def _consent_policy_valid(self) -> Settings:
        self.consent_policy()  # raises one clear line on an unknown purpose or a bad name
        return self

    def consent_policy(self) -> ConsentPolicy:
        """The consent purposes, defaults and aliases as the domain reads them."""
        return ConsentPolicy(
            purposes=self.consent_purposes,
            defaults=dict(self.consent_defaults),
            aliases=dict(self.consent_aliases),
        )

    def inactivity_policy(self) -> InactivityPolicy:
        """The retention policy for inactive persons as the segment engine reads it."""
        return InactivityPolicy.from_days(self.segments_inactive_days, self.segments_inactive_applies_to)

    def topic(self, name: str) -> str:
        """The physical topic name for a logical one (adds ``topic_prefix``)."""
        return f"{self.topic_prefix}{name}"

    def channel_topic(self, channel: Channel) -> str:
        return self.topic(f"events.{channel}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once."""
    return Settings()
