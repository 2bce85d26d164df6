"""What tests measure on a deployment, through the clients a user has."""
