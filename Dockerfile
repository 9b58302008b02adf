# Minimal image; the hardened multi-stage build comes with the deploy work.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir uv==0.13.9 && uv pip install --system --no-cache .
USER 65534:65534
ENTRYPOINT ["node-cost-exporter"]
