"""One module per console page: its routes (``GET`` the page, ``POST`` its forms)."""
