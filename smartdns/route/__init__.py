"""`smartdns route`: a Postfix socketmap service that sends mail abroad through relays when direct delivery meets trouble."""
