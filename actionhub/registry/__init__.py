from .templates import SlaveTemplate, WorkerTemplate, WorkerTemplateRegistry

__all__ = ["SlaveTemplate", "WorkerTemplate", "WorkerTemplateRegistry"]
