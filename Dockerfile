# Minimal image with the locked dependencies; the hardened multi-stage build comes with the deploy work.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv export --frozen --no-dev --no-emit-project -o /tmp/requirements.txt \
 && uv pip install --system --no-cache -r /tmp/requirements.txt \
 && uv pip install --system --no-cache --no-deps . \
 && rm /tmp/requirements.txt
USER 65534:65534
EXPOSE 9798
ENTRYPOINT ["node-cost-exporter"]
