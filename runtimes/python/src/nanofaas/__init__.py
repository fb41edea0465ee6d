"""The ``nanofaas`` namespace of the original nanofaas's Python SDK, for functions written
against it: ``from nanofaas.sdk import nanofaas_function, context``. See ``nanofaas.sdk``."""
