"""The local target: AWS emulated by moto, completed where moto stops short."""
