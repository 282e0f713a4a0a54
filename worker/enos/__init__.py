"""The EnOS boundary: wire models, validation rules, signing, secret sealing and the HTTP client."""
