# The leadflow image: one image for the worker, the projector and the one-shot jobs
# (`topics create`, `migrate`); docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY streams streams
COPY projections projections
RUN pip install --no-cache-dir . \
    && useradd --system --create-home leadflow \
    && mkdir -p /var/lib/leadflow \
    && chown leadflow /var/lib/leadflow
USER leadflow
ENTRYPOINT ["leadflow"]
