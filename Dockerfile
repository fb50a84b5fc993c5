# dicomnode: the node (SCP, worker, outbox, API) on CPU. Built by docker-compose.yml.
FROM python:3.11-slim-bookworm

ARG TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
# DejaVu Sans: the overlay's burned-in text, Latin and Cyrillic ([outputs] language = "uk").
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
# CPU wheels of PyTorch first (the default index would pull CUDA builds).
RUN pip install --index-url https://download.pytorch.org/whl/cpu ${TORCH_SPEC}
COPY pyproject.toml README.md ./
COPY dicomnode ./dicomnode
RUN pip install . \
    && useradd --system --home-dir /var/lib/dicomnode --create-home dicomnode
COPY configs/dicomnode.toml /etc/dicomnode/dicomnode.toml

USER dicomnode
VOLUME ["/var/lib/dicomnode"]
# DICOM (C-STORE SCP) and the HTTP API.
EXPOSE 11112 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["dicomnode"]
CMD ["serve", "--config", "/etc/dicomnode/dicomnode.toml"]
