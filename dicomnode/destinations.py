"""The `[[destinations]]` of the configuration: where results are sent, by C-STORE (DIMSE) or
by STOW-RS (DICOMweb). Part of the settings (`dicomnode.config` reads them into
`Settings.destinations`); a module of its own so that the configuration stays readable.

A table without `type` is a DIMSE destination, as every configuration written before DICOMweb.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

AETitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x21-\x5b\x5d-\x7e ]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: The objects the node makes, by result kind: the study report (SR), the overlay (Secondary
#: Capture) and the findings (GSPS on the source image).
ObjectKind = Literal["sr", "sc", "gsps"]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Which objects are sent here (e.g. ["sr", "sc"] for a PACS without GSPS storage).
    objects: tuple[ObjectKind, ...] = Field(("sr", "sc", "gsps"), min_length=1)

    def resolved(self, base: Path) -> Self:
        """With relative file paths taken from `base` (the configuration file's folder)."""
        return self


class Destination(_Table):
    """A DIMSE peer: results are sent by C-STORE (`deliver/scu.py`)."""

    type: Literal["dimse"] = "dimse"
    name: str = Field(min_length=1)
    ae_title: AETitle
    host: str = Field(min_length=1)
    port: Port
    tls: bool = False


class DicomwebDestination(_Table):
    """A DICOMweb peer: results are sent by STOW-RS to `url` + /studies (`deliver/stow.py`)."""

    type: Literal["dicomweb"]
    name: str = Field(min_length=1)
    url: str
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str = ""
    password: SecretStr = SecretStr("")
    token: SecretStr = SecretStr("")
    tls_verify: bool = True
    tls_ca_certificate: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError("must be an http(s) URL without credentials, e.g. "
                             "https://pacs.example/dicom-web")  # fmt: skip
        return value.strip().rstrip("/")

    def resolved(self, base: Path) -> Self:
        ca = self.tls_ca_certificate
        return self.model_copy(update={"tls_ca_certificate": base / ca}) if ca else self

    @model_validator(mode="after")
    def _auth(self) -> DicomwebDestination:
        if self.auth == "basic" and not self.username:
            raise ValueError("auth = 'basic' needs username (and password)")
        if self.auth == "bearer" and not self.token.get_secret_value():
            raise ValueError("auth = 'bearer' needs token")
        host = urlsplit(self.url).hostname or ""
        if self.auth != "none" and self.url.startswith("http://") and not is_loopback(host):
            raise ValueError("credentials are only sent over https:// (or to loopback)")
        return self


def _destination_type(value: Any) -> str:  # configurations older than DICOMweb have no type
    return str(value.get("type", "dimse") if isinstance(value, dict) else value.type)


AnyDestination = Annotated[
    Annotated[Destination, Tag("dimse")] | Annotated[DicomwebDestination, Tag("dicomweb")],
    Discriminator(_destination_type),
]
