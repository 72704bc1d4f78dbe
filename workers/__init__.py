"""Process entry points: agents as Celery consumers, and the demo."""
