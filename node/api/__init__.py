"""HTTP routes of the e-ACI service, one module per resource."""
