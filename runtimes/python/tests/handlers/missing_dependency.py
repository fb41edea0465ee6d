import nanofaas_test_no_such_dependency  # noqa: F401


def handle(request):
    return None
