# syntax=docker/dockerfile:1
# Multi-stage image for the LVT app, migrations and Dask workers.
# CPU torch by default; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
# (and TORCH_VERSION matching it) for a CUDA worker image.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the chosen index, so the project's range never pulls another build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lvt_core ./lvt_core
COPY training ./training
COPY db ./db
COPY migrations ./migrations
COPY app ./app
RUN pip install .

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends \
        libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri libxrender1 libgomp1 curl \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 lvt
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    LVT_VAR_DIR=/var/lib/lvt \
    LVT_DATA_DIR=/var/lib/lvt/data \
    VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow \
    PYTHONUNBUFFERED=1
RUN mkdir -p /var/lib/lvt/data && chown -R lvt:lvt /var/lib/lvt
USER lvt
WORKDIR /home/lvt
EXPOSE 8501
CMD ["lvt", "app", "--port", "8501", "--host", "0.0.0.0"]
