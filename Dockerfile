# Contrast Lab on a lab server: CPU, `streamlit run app.py` (it starts its own training workers),
# the run store on a volume. The steps are the Makefile's: install requirements.txt, run the app.
#
#   docker build -t contrast-lab .
#   docker run -p 8501:8501 -v contrast-runs:/data -e CONTRAST_DEMO=1 contrast-lab
#
# The default Linux torch wheel brings the CUDA libraries (several GB); PyTorch's CPU-only wheels
# keep the image small: pass their index, from PyTorch's install page, as --build-arg TORCH_INDEX=...
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CONTRAST_HOME=/data
WORKDIR /app

COPY requirements.txt .
RUN if [ -n "$TORCH_INDEX" ]; then \
        pip install --index-url "$TORCH_INDEX" "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"; \
    fi \
    && pip install -r requirements.txt

COPY . .
VOLUME /data
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() != b'ok')"
CMD ["streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0", "--server.headless", "true"]
