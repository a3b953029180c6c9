"""Consumer strategies shipped with candlecast (run by ``manage.py runconsumer``)."""
