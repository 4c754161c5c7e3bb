"""The clinician endpoint: LitServe serving the registered DBT classifier behind OIDC.

``settings`` (ServeSettings) -> ``app.build_server`` (the LitServer, its routes and middleware) ->
``app.serve``.  Inside: ``api`` (the LitAPI), ``gate`` (HTTP-side auth and body checks, with
``auth``), ``model_source`` (registered version, alias polling and swaps), ``catalog`` (study ->
views), ``uploads`` (DICOM uploads), ``pipeline`` (preprocess + score, the batch path's code),
``explain`` (Grad-CAM overlays, ROIs), ``status`` (worker -> HTTP process), ``metrics``,
``audit`` and ``observe`` (Prometheus and the audit trail), ``openapi`` and ``schemas``.
"""
