# The pipeline image. Every Kubeflow task runs in it, and so do Dataflow
# workers (the runner passes --sdk_container_image): it holds the project's
# code, at /pipeline, and the pinned TFX 1.16 stack.
#
#   docker build -t REGISTRY/movielens-tfx:TAG .
#   docker push REGISTRY/movielens-tfx:TAG
#   python -m kubeflow.runner --image REGISTRY/movielens-tfx:TAG ...
#
# For s3:// or MinIO pipeline roots, TensorFlow needs tensorflow-io's S3 file
# system and Beam needs boto3: add them with
#   --build-arg EXTRA_PIP='tensorflow-io==0.37.1 boto3'
# (docs/kubeflow.md).

# Beam's worker boot program, for Dataflow's custom-container workers.
FROM apache/beam_python3.10_sdk:2.59.0 AS beam

# bookworm has glibc 2.36, the glibc constraints.txt was verified on.
FROM python:3.10-slim-bookworm

ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /pipeline

# The dependencies first, from setup.py and the pins alone, so this layer is
# rebuilt only when they change, not on every code edit. With no sources yet
# the project itself installs empty; the code follows below.
COPY setup.py constraints.txt ./
RUN pip install 'pip==24.3.1' \
 && pip install -c constraints.txt . \
 && pip install --no-deps recbole==1.2.1 scann==1.3.2

ARG EXTRA_PIP=""
RUN if [ -n "$EXTRA_PIP" ]; then pip install -c constraints.txt $EXTRA_PIP; fi

COPY --from=beam /opt/apache/beam /opt/apache/beam

# The code: module files and the schema are read from here (the runner's
# --image-source-root), and the packages are installed for the executors
# (--force-reinstall: the same version is already there, installed empty).
COPY . .
RUN pip install --no-deps --force-reinstall -c constraints.txt . \
 && python -c "import components.movielens_example_gen.executor, trainer.task, transforms.preprocessing"

# Kubeflow sets the command (TFX's kubeflow_v2_run_executor); Dataflow starts
# the image through Beam's boot program.
ENTRYPOINT ["/opt/apache/beam/boot"]
