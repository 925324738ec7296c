"""Everything that consumes: Celery app and tasks, dispatcher, embedder, index,
index node, lookup API and cache, retrain and re-index orchestration."""
