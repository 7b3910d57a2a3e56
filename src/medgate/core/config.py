"""One typed configuration for every part of medgate.

Values come, lowest priority first, from the defaults below, a TOML file (``--config FILE`` or
``MEDGATE_CONFIG``) and environment variables ``MEDGATE_<SECTION>__<KEY>`` (for example
``MEDGATE_DICOM__PORT=104``). The key names are a contract that deployment scripts rely on:
add keys freely, never rename them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "MEDGATE_"
CONFIG_ENV = "MEDGATE_CONFIG"
#: The audit key shipped as default: public, so ``medgate serve`` refuses it (core/serve_checks.py).
DEFAULT_HASH_KEY = "change-me"


class ConfigError(ValueError):
    """A configuration file or environment value that cannot be used; the message is one line."""


class DicomConfig(BaseModel):
    """The DICOM listener (C-ECHO / C-STORE SCP) and how medgate calls itself when it moves."""

    ae_title: str = Field("MEDGATE", min_length=1, max_length=16)
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=0, le=65535)
    allowed_calling_aes: list[str] = Field(default_factory=list)
    study_idle_seconds: float = Field(10.0, ge=0)
    max_associations: int = Field(10, ge=1, le=1000)
    overwrite_duplicates: bool = False
    acse_timeout: float = Field(30.0, gt=0)
    network_timeout: float = Field(60.0, gt=0)
    poll_seconds: float = Field(0.0, ge=0, description="0 disables the PACS poll mode")
    poll_modalities: list[str] = Field(default_factory=list)
    retrieve_method: Literal["move", "get"] = "move"
    receiver_processes: int | None = Field(
        None, ge=1, le=256, description="listener processes; none: one per CPU core; 1: in-process"
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title_chars(cls, value: str) -> str:
        if not value.strip() or "\\" in value or any(ord(c) < 32 or ord(c) > 126 for c in value):
            raise ValueError("an AE title is 1-16 printable ASCII characters without backslash")
        return value.strip()


class PacsConfig(BaseModel):
    """The regional PACS medgate pulls studies from and writes its results to."""

    ae_title: str = Field("ORTHANC", min_length=1, max_length=16)
    host: str = "127.0.0.1"
    port: int = Field(4242, ge=1, le=65535)
    send_max_attempts: int = Field(5, ge=1)
    send_backoff_seconds: float = Field(1.0, gt=0)
    send_backoff_max_seconds: float = Field(60.0, gt=0)


class StorageConfig(BaseModel):
    """Where received instances, results and the index live."""

    path: Path = Path("var/medgate")
    min_free_mb: int = Field(500, ge=0)
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: a SQLite file under storage.path"
    )

    def resolved_database_url(self) -> str:
        """The database URL in force: the configured one or ``sqlite:///<path>/index.sqlite``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.path / 'index.sqlite').resolve()}"


class ApiConfig(BaseModel):
    """The HTTP API (behind Ray Serve's proxy when served by ``medgate serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    tokens: dict[str, list[str]] = Field(
        default_factory=dict,
        description="bearer token -> scopes (cds, results, admin); empty = no authentication",
    )
    cds_jwt_issuers: dict[str, Path] = Field(
        default_factory=dict,
        description="CDS Hooks clients: JWT issuer (iss) -> its public key (PEM) or JWK Set (JSON) "
        "file; a valid JWT from one grants the 'cds' scope",
    )
    cds_jwt_audience: str | None = Field(
        None, description="expected JWT aud (this service's CDS Hooks base URL); none = not checked"
    )
    cds_jwt_max_age_s: int = Field(300, ge=1, description="longest accepted JWT lifetime (exp-iat)")
    allow_anonymous: bool = Field(
        False,
        description="serve a non-loopback api.host with no tokens and no JWT issuers (open to "
        "anyone who reaches it); medgate serve warns at every start",
    )


class BundleServingConfig(BaseModel):
    """Serving overrides for one bundle (``[models.bundles.<name>]``); unset keys inherit."""

    max_batch_size: int | None = Field(None, ge=1)
    batch_wait_timeout_s: float | None = Field(None, ge=0)
    num_replicas: int | None = Field(None, ge=1)
    max_replicas: int | None = Field(None, ge=0)
    num_cpus: float | None = Field(None, gt=0)
    num_gpus: float | None = Field(None, ge=0)


class ModelsConfig(BaseModel):
    """Model bundles and how they are served."""

    path: Path = Path("models")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    max_replicas: int = Field(
        0, ge=0, description="> num_replicas enables Ray Serve autoscaling up to this many"
    )
    target_ongoing_requests: float = Field(4.0, gt=0, description="autoscaling target per replica")
    bundles: dict[str, BundleServingConfig] = Field(
        default_factory=dict, description="per-bundle overrides of the serving keys above"
    )
    trusted: list[str] = Field(
        default_factory=list,
        description="bundles approved to run their own MONAI inference config, as "
        "'<name>@<sha256 of configs/ and models/>' (`medgate models list` prints the entry)",
    )


class RouteRule(BaseModel):
    """A declarative routing rule: a study whose series match every given field goes to bundles."""

    name: str
    bundles: list[str]
    modalities: list[str] = Field(default_factory=list)
    body_parts: list[str] = Field(default_factory=list)
    sop_class_uids: list[str] = Field(default_factory=list)
    series_description_pattern: str | None = None
    min_slices: int | None = None
    max_slices: int | None = None


def _default_routes() -> list[RouteRule]:
    return [
        RouteRule(
            name="chest-radiograph",
            bundles=["cxr_classifier", "cxr_lung_heart_seg"],
            modalities=["DX", "CR"],
            body_parts=["CHEST"],
            max_slices=1,
        ),
        RouteRule(
            name="chest-ct",
            bundles=["ct_nodule_seg"],
            modalities=["CT"],
            body_parts=["CHEST"],
            min_slices=8,
        ),
    ]


class RoutingConfig(BaseModel):
    """Which bundles run on which studies, and which bundle triages them."""

    rules: list[RouteRule] = Field(default_factory=_default_routes)
    triage_bundle: str = "study_triage"
    max_attempts: int = Field(3, ge=1)
    retry_backoff_seconds: float = Field(
        2.0, ge=0, description="wait before a failed study's next attempt; doubles per attempt"
    )
    retry_backoff_max_seconds: float = Field(120.0, ge=0)


class ReportsConfig(BaseModel):
    """Result objects written back to the PACS."""

    languages: list[Literal["zh", "en"]] = ["zh", "en"]  # pydantic copies a mutable default
    sr_class: Literal["comprehensive3d", "enhanced", "comprehensive"] = "comprehensive3d"
    manufacturer: str = "medgate"
    institution_name: str = "medgate AI gateway"
    write_seg: bool = True
    write_overlay: bool = True
    write_summary: bool = True


class ServingConfig(BaseModel):
    """Ray, the worker and the worklist (``medgate serve``)."""

    ray_address: str | None = Field(
        None, description="join this Ray cluster (also RAY_ADDRESS / --ray-address); none = local"
    )
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray; none = all")
    object_store_mb: int = Field(300, ge=75, description="object store of a local Ray")
    proxy_location: Literal["HeadOnly", "EveryNode", "Disabled"] = Field(
        "HeadOnly", description="where Ray Serve runs its HTTP proxy (api.host:api.port)"
    )
    http_ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="the HTTP front of a local Ray: 'haproxy' = Ray Serve's HAProxy ingress "
        "with its throughput-optimized data plane (requests go straight to the replica that "
        "serves them); 'proxy' = Ray Serve's Python HTTP proxy. A joined cluster keeps what "
        "its nodes were started with (docs/serving.md)",
    )
    deploy_app: bool = Field(
        True,
        description="false: attach to the Serve application already running on the joined "
        "cluster (a KubeRay RayService deploys it) instead of deploying it",
    )
    attach_timeout_s: float = Field(
        600.0, gt=0, description="with deploy_app = false: wait this long for the application"
    )
    worker_threads: int = Field(2, ge=1, description="studies processed concurrently")
    poll_seconds: float = Field(0.2, gt=0, description="job queue poll interval")
    job_lease_seconds: float = Field(
        20.0,
        gt=0,
        description="lease of a claimed job or outbox batch, renewed every quarter of it while "
        "its holder lives: a killed instance's work is taken over this long after",
    )
    request_timeout_s: float = Field(120.0, gt=0, description="one model call, worker side")
    worklist_max_wait_minutes: dict[str, float] = Field(
        default_factory=lambda: {"critical": 15.0, "urgent": 60.0, "routine": 1440.0}
    )


class AuditConfig(BaseModel):
    """The hash-chained audit trail and the key that turns identifiers into keyed hashes."""

    path: Path | None = Field(None, description="default: <storage.path>/audit.jsonl")
    hash_key: str = Field(
        DEFAULT_HASH_KEY, description="HMAC key for identifiers in logs and the audit trail"
    )


class TlsConfig(BaseModel):
    """DICOM TLS (PS3.15 B.9 BCP195 secure transport): certificates and what peers must show."""

    enabled: bool = False
    cert_file: Path | None = Field(None, description="this node's certificate chain (PEM)")
    key_file: Path | None = Field(None, description="this node's private key (PEM)")
    ca_file: Path | None = Field(None, description="CA bundle (PEM) trusted for peers")
    require_client_cert: bool = Field(True, description="server side: mutual TLS")
    check_hostname: bool = Field(True, description="client side: peer name must match certificate")
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str | None = Field(None, description="OpenSSL cipher list for TLS 1.2; none = BCP195")


class DeidConfig(BaseModel):
    """De-identified export (PS3.15 Annex E Basic Profile plus the options training needs)."""

    key: str | None = Field(
        None, description="HMAC key for UIDs, pseudonyms and date shifts; none = audit.hash_key"
    )
    retain_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    max_date_shift_days: int = Field(3650, ge=1)
    private_whitelist: list[str] = Field(
        default_factory=list,
        description="private elements kept, as 'gggg,xxee:Private Creator' "
        "(e.g. '0019,xx0c:SIEMENS MR HEADER'); every other private element is removed",
    )
    burned_in: Literal["exclude", "flag"] = Field(
        "exclude",
        description="instances with burned-in annotation (or secondary captures without a "
        "BurnedInAnnotation NO) are left out, or exported and listed in the manifest",
    )


class Hl7Destination(BaseModel):
    """A site's HIS/EHR that takes HL7 v2 ORU^R01 result messages over MLLP."""

    host: str
    port: int = Field(ge=1, le=65535)
    receiving_application: str = Field("HIS", description="MSH-5")
    receiving_facility: str = Field("", description="MSH-6; empty = the site's name")


class FhirDestination(BaseModel):
    """A site's FHIR R4 server that takes the results as a transaction Bundle (POST base)."""

    base_url: str = Field(min_length=1, description="e.g. https://ehr.clinic-a.example/fhir")
    token: str | None = Field(None, description="bearer token for the push; none = no header")


class SitePacs(BaseModel):
    """A site's own PACS, which gets the result objects as well as the regional PACS."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)


class SiteConfig(BaseModel):
    """A primary-care site (``[[sites]]``): the AEs that send its studies, where its results go,
    and the bearer tokens that see only its studies, results and FHIR resources."""

    name: str = Field(min_length=1, max_length=64)
    calling_aes: list[str] = Field(
        default_factory=list, description="calling AE titles of its modalities / PACS"
    )
    hl7: Hl7Destination | None = Field(None, description="its HIS (ORU^R01 over MLLP)")
    fhir: FhirDestination | None = Field(
        None, description="its FHIR server: results pushed as transaction Bundles"
    )
    pacs: SitePacs | None = Field(None, description="its own PACS: result objects by C-STORE")
    notify_channels: list[str] = Field(
        default_factory=list, description="names of [[notify.channels]] that serve this site"
    )
    tokens: dict[str, list[str]] = Field(
        default_factory=dict,
        description="site-scoped bearer token -> scopes (results, fhir); sees this site only",
    )


class Hl7DeliveryConfig(BaseModel):
    """How ORU^R01 messages are sent: MSH-3/4, time-outs, retries and the dead letter."""

    sending_application: str = Field("MEDGATE", description="MSH-3")
    sending_facility: str = Field("", description="MSH-4; empty = reports.institution_name")
    connect_timeout_s: float = Field(10.0, gt=0)
    ack_timeout_s: float = Field(30.0, gt=0, description="wait this long for the ACK")
    max_attempts: int = Field(5, ge=1, description="AE/AR answers before the dead letter")
    backoff_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(60.0, gt=0)
    lease_seconds: float = Field(60.0, gt=0, description="a claimed message's send lease")
    poll_seconds: float = Field(1.0, gt=0, description="delivery loop interval")


class FhirDeliveryConfig(BaseModel):
    """The FHIR R4 endpoints medgate serves (``/fhir``), and pushes to the sites' FHIR servers
    (``[sites.fhir]``; the queue's back-off and lease are ``delivery.hl7``'s)."""

    enabled: bool = True
    push_timeout_s: float = Field(30.0, gt=0, description="one push's HTTP time-out")
    push_max_attempts: int = Field(5, ge=1, description="4xx answers before the dead letter")


class DeliveryConfig(BaseModel):
    """Delivery of results to the sites' own systems (HL7 v2, FHIR)."""

    hl7: Hl7DeliveryConfig = Field(default_factory=Hl7DeliveryConfig)
    fhir: FhirDeliveryConfig = Field(default_factory=FhirDeliveryConfig)


# --------------------------------------------------------------------------------------------
# Radiologist review and critical-result notification (medgate.review; docs/review.md)


NotifyField = Literal["priority", "findings", "modality", "site", "received_at"]


def _default_notify_fields() -> list[NotifyField]:
    return ["priority", "findings"]


class NotifyChannelConfig(BaseModel):
    """One ``[[notify.channels]]`` entry: where a critical result is announced, to whom, and how
    long to wait for an acknowledgement before the next channel of the same site is tried."""

    name: str = Field(min_length=1, max_length=64)
    kind: Literal["webhook", "smtp"]
    site: str = Field("", description="the [[sites]] name it serves; empty = every site")
    role: str = Field("radiologist", description="who reads it (shown in the message)")
    escalate_after_minutes: float = Field(
        10.0, gt=0, description="unacknowledged this long: notify the site's next channel"
    )
    url: str = Field("", description="webhook: the URL the JSON is POSTed to")
    smtp_host: str = Field("127.0.0.1", description="smtp: mail server")
    smtp_port: int = Field(25, ge=1, le=65535)
    mail_from: str = Field("medgate@localhost")
    mail_to: list[str] = Field(default_factory=list)
    fields: list[NotifyField] = Field(
        default_factory=_default_notify_fields,
        description="what the message may carry besides the link (never a patient name)",
    )


class NotifyConfig(BaseModel):
    """Critical-result notification: the channels and the loop that sends and escalates."""

    channels: list[NotifyChannelConfig] = Field(default_factory=list)
    poll_seconds: float = Field(1.0, gt=0, description="notification loop interval")
    send_timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(10, ge=1, description="failed sends before a message is dead")


class ReviewConfig(BaseModel):
    """The reviewer's web pages and verdicts."""

    language: Literal["zh", "en"] = Field("zh", description="page language without ?lang=")
    base_url: str = Field(
        "", description="public URL of the API, for links in notifications; empty = api.host"
    )
    session_hours: float = Field(12.0, gt=0, description="a review session cookie's lifetime")
    drift_window: int = Field(
        50, ge=1, description="drift alarm: the last N AI-positive findings a radiologist judged"
    )
    drift_margin: float = Field(
        0.15, ge=0, le=1, description="alarm when their confirmed rate < validation PPV - margin"
    )
    drift_min_reviews: int = Field(10, ge=1, description="no alarm on fewer judged findings")


class Settings(BaseSettings):
    """medgate's effective configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    dicom: DicomConfig = Field(default_factory=DicomConfig)
    pacs: PacsConfig = Field(default_factory=PacsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    deid: DeidConfig = Field(default_factory=DeidConfig)
    sites: list[SiteConfig] = Field(default_factory=list)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file (passed as init kwargs), which wins over defaults.
        return (env_settings, init_settings)

    @property
    def audit_path(self) -> Path:
        return self.audit.path or (self.storage.path / "audit.jsonl")

    @field_validator("sites")
    @classmethod
    def _sites_distinct(cls, sites: list[SiteConfig]) -> list[SiteConfig]:
        """A site name, and a site token, each name one site (results and scoping rely on it)."""
        names = [site.name for site in sites]
        if len(set(names)) != len(names):
            raise ValueError("two [[sites]] have the same name")
        tokens = [token for site in sites for token in site.tokens]
        if len(set(tokens)) != len(tokens):
            raise ValueError("a token is listed under two [[sites]]")
        return sites

    @model_validator(mode="after")
    def _site_tokens_apart(self) -> Settings:
        """A site token sees one site; the same token in api.tokens would see them all."""
        shared = {t for site in self.sites for t in site.tokens} & set(self.api.tokens)
        if shared:
            raise ValueError("a [[sites]] token is also listed in api.tokens")
        return self


def _format_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(root)"
    return f"{source}: invalid value for '{key}': {first['msg']}"


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any) plus the environment into one validated ``Settings``.

    Raises ``ConfigError`` with a one-line message naming the bad key; callers show that line
    instead of a traceback.
    """
    file_values: dict[str, Any] = {}
    source = "environment"
    path = path or os.environ.get(CONFIG_ENV)
    if path:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                file_values = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"{source}: config file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    for section, values in overrides.items():
        file_values.setdefault(section, {}).update(values)
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from exc
