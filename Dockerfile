FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamproc ./streamproc
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 9464
ENTRYPOINT ["streamproc"]
CMD ["worker"]
