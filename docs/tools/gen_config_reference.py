"""Generate the configuration reference of docs/administration.md from `dicomnode.config`.

    PYTHONPATH=. .venv/bin/python docs/tools/gen_config_reference.py          # rewrite
    PYTHONPATH=. .venv/bin/python docs/tools/gen_config_reference.py --check  # exit 1 if stale

Keys, defaults and environment names come from the pydantic models (`Settings` and its
sections); only the explanations are written here, in NOTES. A new setting without a note
stops this script, and tests/unit/test_administration_doc.py fails until the document lists it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import generated_sections  # docs/tools, next to this script
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from dicomnode.config import ENV_PREFIX, Settings
from dicomnode.destinations import Destination, DicomwebDestination

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "administration.md"
BLOCK = "config-reference"

NOTES: dict[str, str] = {
    "node.ae_title": "AE title of the SCP, and the calling AE title of every result the node "
    "sends. 1–16 characters, no backslash. The called AE title of incoming associations is "
    "not checked.",
    "node.host": "Listen address of the DICOM SCP. `127.0.0.1`: local peers only; `0.0.0.0`: all.",
    "node.port": "TCP port of the DICOM SCP.",
    "node.data_dir": "Spool (`spool/in`, `spool/hdr`, `spool/out`, `spool/tmp`), the SQLite "
    "database `dicomnode.db`, the model cache `models/` and `log-salt`. A relative path is "
    "taken from the configuration file's folder (the working directory without `--config`), "
    "as are `spool_dir`, the TLS files and `model.package`.",
    "node.study_stable_seconds": "A study's report (SR) is built once no image of it has "
    "arrived for this long and all its jobs are finished.",
    "node.allowed_calling_ae_titles": "Calling AE titles allowed to associate (exact, "
    "case-sensitive); others are rejected. Empty: any. From the environment as JSON, "
    "`'[\"ORTHANC\"]'`.",
    "node.uid_root": "Root of every UID the node creates (at most 44 characters with its "
    "trailing dot). Instances under it are recognised as the node's own output and never "
    "classified. Replace the default (under pydicom's root) with your organisation's.",
    "node.max_associations": "Simultaneous incoming associations; one more is rejected "
    "(transient, local limit exceeded). An association counts once its whole A-ASSOCIATE-RQ "
    "has arrived (the peer's AE title known); connections still negotiating count against "
    "`max_negotiating` instead, so idle or trickling connections cannot lock senders out.",
    "node.max_negotiating": "Connections accepted whose A-ASSOCIATE-RQ has not arrived "
    "completely yet, all addresses together. When a new connection would pass it, the oldest "
    "negotiating connection (of the address holding the most) is closed to make room: a real "
    "peer sends its request within milliseconds, so only connections that merely hold a place "
    "are dropped. Each drop is logged, audited (`SecurityAlert`) and counted "
    '(`dicomnode_stores_rejected_total{status="dropped"}`).',
    "node.max_negotiating_per_address": "The same budget per source address (at most "
    "`max_negotiating`): past it, that address's oldest negotiating connection is closed, so "
    "one host cannot push the connections of others out.",
    "node.min_receive_bytes_per_second": "While a P-DATA-TF PDU or a data set arrives, each "
    "window of `receive_rate_window_seconds` must bring at least this many bytes per second on "
    "average; a slower sender is aborted (A-ABORT), logged and audited. 4096 lets a 64 kbit/s "
    "line through and stops a peer sending a byte at a time. 0: no minimum.",
    "node.receive_rate_window_seconds": "Length of the windows over which "
    "`min_receive_bytes_per_second` is averaged (a pause shorter than a window is forgiven if "
    "the rest of the window makes up for it).",
    "node.max_pdu_size": "Maximum PDU length the SCP offers to receive, in bytes (0: unlimited).",
    "node.acse_timeout": "Seconds to wait for association messages (request, release). The "
    "whole A-ASSOCIATE-RQ must arrive within this many seconds of the connection being "
    "accepted, and every other association message within this many seconds of its first "
    "byte, however the bytes trickle in; past it the connection is closed (A-ABORT).",
    "node.dimse_timeout": "Seconds to wait for a DIMSE message on an open association.",
    "node.network_timeout": "Seconds without network traffic after which an association is "
    "dropped.",
    "node.min_free_mb": "Free space (MiB) kept on the spool's file system: below it (counting "
    "the incoming dataset) C-STORE answers 0xA700. 0: no check.",
    "node.log_salt": "Salt of the hashed identifiers in logs. Empty: 32 random hex digits "
    "made once and kept in `data_dir/log-salt`.",
    "node.tls_certificate": "PEM certificate of the SCP. With `tls_private_key`, the DICOM "
    "port speaks TLS (1.2 or later) only.",
    "node.tls_private_key": "PEM private key for `tls_certificate`; the two go together.",
    "node.tls_ca_certificate": "PEM CA certificate: TLS destinations are verified against it "
    "(instead of the system CAs). Unless `tls_client_ca_certificate` is set or "
    "`tls_verify_clients` is false, the SCP also requires a client certificate signed by it "
    "(as before those two keys existed).",
    "node.tls_required": "Refuse to start unless `tls_certificate` and `tls_private_key` are "
    "set. (With them set, the port accepts TLS only whatever this value.) Not together with "
    "`tls_port`, which opens `port` in plaintext: that combination is refused at start.",
    "node.tls_client_ca_certificate": "PEM CA certificate of the client certificates the SCP "
    "requires when receiving over TLS, apart from the CA that verifies TLS destinations "
    "(`tls_ca_certificate`): a certificate signed only by the latter is then refused. Needs "
    "`tls_certificate` and `tls_private_key`.",
    "node.tls_verify_clients": "`false`: the SCP asks no client certificate (any TLS client "
    "may associate, still subject to `allowed_calling_ae_titles`), even with "
    "`tls_ca_certificate` set, which then only verifies TLS destinations. `true`: a client "
    "certificate is required when a client CA is set (`tls_client_ca_certificate`, else "
    "`tls_ca_certificate`).",
    "node.tls_port": "A second DICOM port, TLS only, beside `port`, which then accepts "
    "plaintext only (e.g. 2762, DICOM TLS's registered port). Same host, AE title, handlers "
    "and limits; `max_associations` counts both ports together. Needs `tls_certificate` and "
    "`tls_private_key`; refused with `tls_required = true`. 0: one port (TLS only when a "
    "certificate is set).",
    "destinations[].type": '`"dimse"`: results go by C-STORE (`ae_title`, `host`, `port`, '
    '`tls`); `"dicomweb"`: by STOW-RS (`url`, `auth`, …). Both share the outbox\'s retries, '
    "backoff and delivery states.",
    "destinations[].name": "Your name for the destination, unique; deliveries are recorded "
    "under it.",
    "destinations[].ae_title": "Called AE title of the destination.",
    "destinations[].host": "Host name or address of the destination.",
    "destinations[].port": "DICOM port of the destination.",
    "destinations[].tls": "Send results over DICOM TLS (1.2 or later): the destination's "
    "certificate and host name are verified against `node.tls_ca_certificate` (else the "
    "system CAs); the node's `tls_certificate`, when set, is presented as client certificate. "
    "Independent of what receiving requires (`node.tls_verify_clients`).",
    "destinations[].url": "DICOMweb base URL of a `dicomweb` destination (http or https, no "
    "credentials in it); results are POSTed to `{url}/studies/{study}`. Orthanc: "
    "`http://host:8042/dicom-web`.",
    "destinations[].auth": 'Authentication of a `dicomweb` destination: `"none"`, '
    '`"basic"` (`username`, `password`) or `"bearer"` (`token`). Credentials are only '
    "sent over https (or to loopback): plain http elsewhere is refused at start.",
    "destinations[].username": 'User name for `auth = "basic"`.',
    "destinations[].password": 'Password for `auth = "basic"` (never logged).',
    "destinations[].token": 'Bearer token for `auth = "bearer"` (never logged).',
    "destinations[].tls_verify": "Verify the https certificate of a `dicomweb` destination. "
    "`false` only for tests.",
    "destinations[].tls_ca_certificate": "PEM CA certificate that verifies a `dicomweb` "
    "destination's https certificate; unset: the system CAs.",
    "outputs.language": "Language of the text burned into the Secondary Capture overlay "
    "(banner, footer): `en` or `uk`. The SR's coded content does not depend on it; the pages "
    "follow each reader's browser.",
    "destinations[].objects": "Which objects are sent here: `\"sr\"` (the study report), "
    "`\"sc\"` (the overlay), `\"gsps\"` (the findings outlined on the source image). Default: "
    "all three; `[\"sr\", \"sc\"]` for a PACS that cannot store a presentation state. Applied "
    "when a result is queued; one queued before a kind was left out is not sent (failed: "
    "\"destination does not take …\").",
    "delivery.max_attempts": "Attempts per result and destination before the delivery is "
    "marked failed. 0: retry forever.",
    "delivery.backoff_initial_seconds": "Delay after the first failed attempt; doubled after "
    "each further one.",
    "delivery.backoff_max_seconds": "Upper bound of the delay between attempts.",
    "api.host": "Listen address of the HTTP API. Beyond loopback the node refuses to start "
    "without `api.token`.",
    "api.port": "HTTP port of the API. 0: no API.",
    "api.token": "Bearer token required by everything but `/healthz` and `/readyz`. Empty: "
    "no authentication (allowed on loopback only).",
    "api.show_patient_identifiers": "Include patient name, ID, birth date and accession "
    "number in `/api/studies/{uid}`; only ever when `api.token` is set.",
    "api.viewer_url": "Link template to open a study in a viewer (`{study_instance_uid}` is "
    "replaced); shown as a link on each worklist row. Empty: no link.",
    "api.max_upload_mb": "Largest file accepted by `POST /api/analyze` and "
    "`/api/analyze-study` (MiB); a larger upload is answered 413 before it is stored.",
    "api.max_zip_entries": "Most entries (files and folders) a ZIP study may hold; more: 413.",
    "api.max_zip_uncompressed_mb": "Most bytes (MiB) a ZIP study may expand to, counted while "
    "reading (the sizes an archive declares are not trusted); more: 413.",
    "api.max_compression_ratio": "Highest uncompressed/compressed ratio of a ZIP entry larger "
    "than 1 MiB (a ZIP bomb's is in the thousands; DICOM rarely exceeds 20); higher: 413.",
    "api.upload_retention_hours": "Uploads and their results (`data_dir/uploads/<id>/`) are "
    "deleted this many hours after the upload (checked every 10 minutes and at each upload). "
    "0: kept until deleted by hand.",
    "api.public_url": "The node's address as browsers see it when a reverse proxy stands in "
    "front (e.g. `https://triage.example`). A POST, PUT, PATCH or DELETE carrying the pages' "
    "session cookie must come from the node's own origin (the address the request was sent "
    "to, or this one); others get 403 (`code: cross_origin`). Empty: the request's own "
    "address only.",
    "api.login_max_failures": "Failed sign-ins (`POST /login`) from one client address "
    "within `login_failure_window_seconds` after which that address gets 429 with "
    "`Retry-After` (every attempt, until the oldest failure leaves the window). Each failure "
    "is audited (User Authentication); a successful sign-in resets the count.",
    "api.login_failure_window_seconds": "The window of `login_max_failures`, in seconds.",
    "model.package": "Model package folder (`weights.safetensors` + `model.json`). Empty: the "
    "**UNTRAINED DEMO** model.",
    "model.device": "`auto` (CUDA when present, else CPU), `cpu` or `cuda`.",
    "model.demo_architecture": "timm architecture of the untrained demo model (no package).",
    "model.threads": "CPU threads for inference (PyTorch `set_num_threads`, ONNX Runtime "
    "intra-op threads, OpenVINO inference threads); 0: the runtime's default.",
    "database.url": "SQLAlchemy URL. Empty: SQLite at `data_dir/dicomnode.db` (WAL; the "
    "commit that records a received image is `synchronous=FULL`, later state changes "
    "`NORMAL`: a power cut may repeat work, never lose an acknowledged image).",
    # A note for a key that does not exist is never printed.
    "node.node_id": "This node's id in a shared database (owner of its leases); unique per "
    "node, stable across restarts. Empty: `<ae_title>@<hostname>:<port>`.",
    "node.spool_dir": "Spool directory; default `data_dir/spool`. Nodes sharing one database "
    "must share it too. Relative: from the configuration file's folder.",
    "node.shutdown_grace_seconds": "On SIGTERM/SIGINT: stop accepting associations, finish or "
    "requeue the job in hand, record the outbox state and exit within this many seconds.",
    "retention.enabled": "Run the scheduled clean-up in the node (`dicomnode retention` runs it "
    "by hand either way).",
    "retention.schedule": "When the clean-up runs: a 5-field crontab expression, local time.",
    "retention.spool_days": "Received images: deleted once every result of their study is "
    "delivered (whatever this value), else this many days after receipt. Never while a result "
    "of the study is undelivered or the study is in progress. 0: no age limit (images of "
    "delivered studies still go).",
    "retention.results_days": "Result files (SR, SC): deleted this many days after delivery. "
    "0: keep.",
    "retention.records_days": "Job, study, result and delivery rows: deleted this many days "
    "after the study's last activity. 0: keep.",
    "retention.orthanc_results_days": "Delete the node's own result series from Orthanc after "
    "this many days. 0: never.",
    "retention.results_orthanc_url": "Orthanc REST URL used for that deletion, with "
    "`orthanc.timeout`. When it is the server of `orthanc.url` (same scheme, host and port), "
    "the `orthanc.username`/`password` are used, as for the pull and the outcome labels; they "
    "are never sent to another host. Credentials in the URL itself "
    "(`http://user:password@host:8042`) are used as they are.",
    "retention.audit_days": "Audit events are deleted this many days after they were recorded, "
    "in batches of 5,000 rows per transaction; the run records one `AuditLogUsed` event (action "
    "D) with the count. 2190 = 6 years, the retention HIPAA sets for security documentation "
    "(45 CFR 164.316(b)(2)); other rules may ask for longer (section 6). 0: keep.",
    "retention.model_cache_days": "Prepared models in `data_dir/models` (manifest `*.json`, "
    "ONNX graph `*.onnx` of ~75–100 MB, check outputs `*.reference.npz`) that no load has used "
    "for this many days are deleted at node start and after each scheduled run (with "
    "`enabled`); each load (`serve`, `doctor`, `classify`) marks the files it uses by their "
    "modification time. Never the model the node serves, nor a file of any other name or a "
    "symlink. A new model version or a torch/timm upgrade leaves the previous model's files "
    "unused. 0: keep.",
    "model.decode_min_size": "JPEG 2000 sources are decoded at the smallest reduced "
    "resolution whose long side is still at least this many pixels (the model letterboxes the "
    "long side to `input_size`). 0: always decode at full size.",
    "node.resource_retry_initial_seconds": "An acknowledged image whose results (header, SC) "
    "cannot be written — disk full (ENOSPC), free space below `min_free_mb`, another write "
    "error — is not failed: the job goes back to `queued` with a `waiting: …` reason and is "
    "retried after this many seconds, doubling each time; a study report likewise. Counted in "
    "`dicomnode_jobs_deferred_total`.",
    "node.resource_retry_max_seconds": "Longest wait between two such retries: once space is "
    "freed, waiting work resumes within this many seconds.",
    "node.max_dataset_mb": "Largest dataset accepted per C-STORE, counted after inflating a "
    "deflated one (bounded, so a deflate bomb cannot exhaust memory); larger: 0xA700. "
    "At least 1. Counted while the data set arrives: past it the association is aborted "
    "(A-ABORT), so no more than this is ever buffered. Instances pulled from Orthanc are "
    "refused over it too (on their Content-Length, or as the body arrives), and so are HTTP "
    "analysis uploads (DICOM once inflated, a picture once decoded: 413 `file_refused`).",
    "delivery.timeout_seconds": "Seconds a destination may take to answer (association, each "
    "C-STORE, an idle connection) before the attempt fails and is retried with backoff.",
    "database.lease_seconds": "Lease on a job, report or delivery a node works on; renewed "
    "while the node lives, returned to the queue when it expires.",
    "database.auto_upgrade": "Apply schema migrations at start (under a lock). false: refuse "
    "to start when the schema needs an upgrade.",
    "model.runtime": "`auto` (on CPU: every installed runtime and precision timed once on the "
    "host, the fastest that passes the equivalence check against PyTorch served, see the model "
    "card; PyTorch on CUDA), `torch`, `onnxruntime` or `openvino`; a non-PyTorch runtime is checked against PyTorch at start, and served "
    "without loading PyTorch into the node's process.",
    "model.max_batch": "Images classified in one forward pass when that many are queued.",
    "model.spinning": "ONNX Runtime's pool threads spin between operators instead of sleeping "
    "while an image is classified (never after: they are parked when the run returns). "
    "Inference alone ~15 % faster; in the node the gain was within the run-to-run noise "
    "(benchmarks/RESULTS.md).",
    "model.workers": "Worker threads classifying queued images in parallel (one shared model). "
    "With more than one and ONNX Runtime, an image classified while another is in hand runs "
    "on one core (a second, single-threaded session, 100–200 MB): 8–17 % less inference CPU per "
    "image in a burst; a lone image still gets every thread.",
    "orthanc.url": "Orthanc REST API (e.g. `http://127.0.0.1:8042`). Empty: no Orthanc "
    "integration.",
    "orthanc.username": "Orthanc REST user; empty: no authentication.",
    "orthanc.password": "Password of `orthanc.username`.",
    "orthanc.destination": "The `[[destinations]]` name that is this Orthanc: once a study's "
    "SR is delivered there, its outcome is recorded on the study.",
    "orthanc.record_outcome": "Record the outcome on the study in Orthanc (metadata "
    "`AIOutcome`, `AIProbability`, `AIModel`; labels from Orthanc 1.12).",
    "orthanc.pull": "Accept `POST /api/orthanc/studies/{id}` (router plugin in pull mode) and "
    "fetch the study's instances over REST.",
    "orthanc.modalities": "Series modalities fetched when a pull request names no instances.",
    "orthanc.timeout": "Seconds to wait for Orthanc's REST API.",
}


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, tuple | list):  # as written in TOML
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    return f"`{value}`"


def settings_keys() -> list[tuple[str, str, str]]:
    """(documented key, default, environment variable) for every setting."""
    keys = []
    seen = set()
    for section, field in Settings.model_fields.items():
        models: list[type[BaseModel]]
        if section == "destinations":  # the keys of both types; `type` defaults to "dimse"
            models = [Destination, DicomwebDestination]
            prefix, env = "destinations[].", "(file only)"
        else:
            models, prefix, env = [field.annotation], f"{section}.", ""  # type: ignore[list-item]
        for model in models:
            for key, sub in model.model_fields.items():
                name = prefix + key
                if name in seen:
                    continue
                seen.add(name)
                variable = env or f"`{ENV_PREFIX}{section.upper()}__{key.upper()}`"
                keys.append((name, _default(sub), variable))
    return keys


def reference() -> str:
    rows = ["| Key | Default | Environment | Meaning |", "|---|---|---|---|"]
    missing = []
    for name, default, variable in settings_keys():
        note = NOTES.get(name)
        if note is None:
            missing.append(name)
            continue
        rows.append(f"| `{name}` | {default} | {variable} | {note} |")
    if missing:
        raise SystemExit(f"no explanation in NOTES for: {', '.join(missing)}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    return generated_sections.main(
        argv,
        doc=DOC,
        sections=lambda: {BLOCK: reference()},
        description=__doc__.splitlines()[0],
        script=__file__,
    )


if __name__ == "__main__":
    sys.exit(main())
