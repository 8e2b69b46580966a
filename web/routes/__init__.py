"""Route modules: each exposes setup(app) and is picked up by web.app.create_app."""
