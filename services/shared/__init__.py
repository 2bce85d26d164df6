"""Parts shared by the platform's services."""
