"""One pytest package per migration stage; each deploys its stage and proves it."""
