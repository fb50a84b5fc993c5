"""Real DICOM validators from Debian packages, with their output parsed into lists.

- `dciodvfy` (dicom3tools) checks a file against its IOD; it prints "Error - …",
  "Warning - …" and "Abort - …" lines (sometimes after an attribute tag) on stderr.
- pixelmed's `DicomSRValidator` (pixelmed-apps) checks an SR against its templates; it prints
  "Error: …" and "Warning: …" lines on stdout and always exits 0, so the output is the only
  signal. Its XPath work exceeds the JDK's default XML limits, so the JVM is started with the
  `-Djdk.xml.*Limit=0` flags rather than through /usr/bin/DicomSRValidator.
- dcmtk's `dsrdump` renders an SR as text (for asserting on content).

A validator that fails to run, reads nothing, or does not finish its pass is reported as an
error, never as a clean result.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_SECONDS = 300
PIXELMED_LAUNCHER = Path("/usr/bin/DicomSRValidator")
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
PIXELMED_CLASS = "com.pixelmed.validate.DicomSRValidator"
JAVA_XML_FLAGS = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)
#: A short-lived JVM: the quick JIT tier and the serial collector halve the run time here
#: (≈ 7 s instead of ≈ 15 s per report); they do not change what is checked.
JAVA_SPEED_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

_DCIODVFY_LINE = re.compile(r"(?:^|\s)(Error|Warning|Abort) - (.*)$")
_PIXELMED_LINE = re.compile(r"^(Error|Warning): (.*)$")


@dataclass(frozen=True)
class Findings:
    """What a validator said: errors and warnings, one message per entry."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_dciodvfy(output: str, returncode: int = 0) -> Findings:
    """Errors (incl. "Abort") and warnings from dciodvfy's combined output."""
    errors: list[str] = []
    warnings: list[str] = []
    for line in output.splitlines():
        match = _DCIODVFY_LINE.search(line)
        if match is None:
            continue
        (warnings if match.group(1) == "Warning" else errors).append(line.strip())
    if returncode != 0 and not errors:
        errors.append(f"dciodvfy exited with status {returncode} without an error line")
    return Findings(errors, warnings)


def parse_sr_validator(stdout: str, stderr: str = "", returncode: int = 0) -> Findings:
    """Errors and warnings from DicomSRValidator's output; an incomplete run is an error."""
    errors: list[str] = []
    warnings: list[str] = []
    for line in stdout.splitlines():
        match = _PIXELMED_LINE.match(line.strip())
        if match is not None:
            (warnings if match.group(1) == "Warning" else errors).append(match.group(2))
        elif "unrecognized" in line.lower():
            errors.append(line.strip())
    if "Found Root Template" not in stdout:
        errors.append("no root template recognised")
    if "IOD validation complete" not in stdout:
        errors.append("validation did not complete")
    if "Exception" in stderr or "SEVERE" in stderr:
        lines = stderr.strip().splitlines()
        cause = next((line for line in lines if "Exception" in line), lines[-1])
        errors.append("validator raised: " + cause.strip()[:300])
    if returncode != 0:
        errors.append(f"DicomSRValidator exited with status {returncode}")
    return Findings(errors, warnings)


def run_dciodvfy(path: str | Path) -> Findings:
    """Run dciodvfy on one file."""
    result = _run(["dciodvfy", str(path)])
    return parse_dciodvfy(result.stdout + "\n" + result.stderr, result.returncode)


def dciodvfy(path: str | Path) -> list[str]:
    """dciodvfy's errors for one file (empty when the file conforms to its IOD)."""
    return run_dciodvfy(path).errors


def dciodvfy_warnings(path: str | Path) -> list[str]:
    """dciodvfy's warnings for one file."""
    return run_dciodvfy(path).warnings


def pixelmed_command() -> list[str]:
    """The java command line of /usr/bin/DicomSRValidator, with the XML limit flags added."""
    java, classpath = "java", str(PIXELMED_JAR)
    if PIXELMED_LAUNCHER.is_file():
        for line in PIXELMED_LAUNCHER.read_text().splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].endswith("java") and "-cp" in words:
                java, classpath = words[0], words[words.index("-cp") + 1]
                break
    if shutil.which(java) is None:
        raise FileNotFoundError("java not found (Debian default-jre-headless)")
    return [java, *JAVA_SPEED_FLAGS, *JAVA_XML_FLAGS, "-cp", classpath, PIXELMED_CLASS]


def run_sr_validator(path: str | Path) -> Findings:
    """Run pixelmed's DicomSRValidator on one SR file."""
    result = _run([*pixelmed_command(), str(path)])
    return parse_sr_validator(result.stdout, result.stderr, result.returncode)


def sr_validate(path: str | Path) -> list[str]:
    """DicomSRValidator's errors for one SR file (empty when valid)."""
    return run_sr_validator(path).errors


def sr_validate_warnings(path: str | Path) -> list[str]:
    """DicomSRValidator's warnings for one SR file."""
    return run_sr_validator(path).warnings


def dsrdump(path: str | Path, *options: str) -> str:
    """dcmtk's text rendering of an SR: long values in full, all codes, UTF-8."""
    result = _run(["dsrdump", *(options or ("+Pl", "+Pc", "+U8")), str(path)])
    if result.returncode != 0:
        raise RuntimeError(f"dsrdump failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
