# syntax=docker/dockerfile:1
# GPU image for the `video-cnn-rnn` command (LightningCLI fit / validate / test / predict, extract, synthetic).
#
#   docker build -t video-cnn-rnn .
#   mkdir -p data runs
#   docker run --rm -v "$PWD/data:/data" video-cnn-rnn synthetic data/synthetic
#   docker run --rm --gpus all --shm-size=8g -v "$PWD/data:/data" -v "$PWD/runs:/workspace/runs" \
#       -v "$PWD/weights:/workspace/weights:ro" video-cnn-rnn fit --config configs/demo.yaml
#
# The base image ships torch / torchvision built for CUDA; the package is installed on top of them with those two
# versions pinned as constraints, so pip keeps the CUDA builds instead of pulling new wheels from PyPI.
# The plots and tensorboard extras are installed too: the image has every feature (confusion_matrix.png, TensorBoard).
# No apt packages are needed: the decord and PyAV wheels bundle their own FFmpeg libraries, and OpenCV is only a
# dev/test dependency.
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the install needs: metadata, readme (referenced by pyproject.toml) and the package itself.
COPY pyproject.toml README.md /opt/video_cnn_rnn/
COPY video_cnn_rnn/ /opt/video_cnn_rnn/video_cnn_rnn/

RUN python -c "from importlib.metadata import version; print('\n'.join(f'{p}=={version(p)}' for p in ('torch', 'torchvision')))" \
        > /tmp/torch-constraints.txt \
    && pip install --no-cache-dir --constraint /tmp/torch-constraints.txt "/opt/video_cnn_rnn[plots,tensorboard]" \
    && rm -rf /tmp/torch-constraints.txt /opt/video_cnn_rnn \
    && video-cnn-rnn --help > /dev/null

# Non-root user; /workspace is the working directory (runs/ land here), /data is where datasets are mounted.
# workspace/data -> /data, so the relative `data/...` paths in configs/ resolve to the mount.
RUN useradd --create-home --uid 1000 --user-group app \
    && mkdir -p /workspace /data \
    && ln -s /data /workspace/data \
    && chown -R app:app /workspace /data

COPY --chown=app:app configs/ /workspace/configs/

# Numeric so the host (and Kubernetes runAsNonRoot) can tell it is not root.
USER 1000:1000
WORKDIR /workspace

ENTRYPOINT ["video-cnn-rnn"]
CMD ["--help"]
