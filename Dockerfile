# The rqueue command line in a small image; docker-compose.yml runs every
# service (producer, consumer, requester, subscriber) from it.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RQUEUE_LOG_FORMAT=json

WORKDIR /src
COPY pyproject.toml README.md ./
COPY rqueue ./rqueue
COPY lua ./lua
RUN pip install ".[metrics]" && rqueue --version

# Run as a user with no rights over the image.
RUN useradd --create-home --uid 10001 rqueue
USER rqueue
WORKDIR /home/rqueue
CMD ["rqueue", "--help"]
