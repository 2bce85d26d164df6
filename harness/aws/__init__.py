"""The control plane: everything that talks to AWS, through boto3 only.

Nothing here knows which target it runs against: the local target is reached
through the endpoint URL that the client factory is given.
"""
