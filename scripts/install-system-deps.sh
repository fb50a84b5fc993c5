#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers and validators, only when missing.
set -euo pipefail
need=()
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancPython.so ] || ls /usr/share/orthanc/plugins/libOrthancPython*.so >/dev/null 2>&1 || need+=(orthanc-python)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || ls /usr/share/orthanc/plugins/libOrthancDicomWeb*.so >/dev/null 2>&1 || need+=(orthanc-dicomweb)  # STOW-RS peer
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v DicomSRValidator >/dev/null 2>&1 || [ -e /usr/share/java/pixelmed.jar ] || need+=(pixelmed-apps)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v node >/dev/null 2>&1 || need+=(nodejs)  # runs the Orthanc Explorer extension's JS in a unit test
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # makes the certificates of the DICOM TLS tests
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root or install them)" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}" default-jre-headless
