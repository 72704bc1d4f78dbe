"""Services: every rule of the product lives here, once, for every adapter."""
