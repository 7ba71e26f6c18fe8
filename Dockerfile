# The mlworkload operator: `docker build -t IMAGE .`; the Helm chart runs it as `mlworkload run`.
# Two stages: wheels are built with pip's cache and build tools, the runtime gets only the wheels.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 mlworkload \
    && useradd --system --uid 10001 --gid mlworkload --no-create-home --shell /usr/sbin/nologin mlworkload
COPY --from=build /wheels /wheels
# Runtime dependencies only: the test tooling (the dev extra) never enters the image.
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
EXPOSE 8080 8081 9443
ENTRYPOINT ["mlworkload"]
CMD ["run"]
