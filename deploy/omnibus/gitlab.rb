## /etc/gitlab/gitlab.rb settings for jobgate as GitLab's external host (deploy/README.md, "Omnibus").
## Add them, then `gitlab-ctl reconfigure`. Everything else stays as it was.

external_url 'https://gitlab.example.com'
registry_external_url 'https://registry.example.com'
pages_external_url 'https://pages.example.com'
gitlab_kas_external_url 'wss://kas.example.com/'

## jobgate holds :443 and the certificates: GitLab's bundled nginx steps aside for every host.
nginx['enable'] = false
registry_nginx['enable'] = false
pages_nginx['enable'] = false

## Workhorse keeps its Unix socket (the default); jobgate's user may open it.
gitlab_workhorse['listen_network'] = "unix"
gitlab_workhorse['listen_addr'] = "/var/opt/gitlab/gitlab-workhorse/sockets/socket"
web_server['external_users'] = ['jobgate']

## Puma on loopback: jobgate asks it about job tokens (gitlab.url) without going through itself.
puma['listen'] = '127.0.0.1'
puma['port'] = 8080

## The registry on loopback, behind jobgate; its token realm stays GitLab's own /jwt/auth
## (https://gitlab.example.com/jwt/auth, which jobgate answers by asking GitLab).
registry['registry_http_addr'] = "127.0.0.1:5000"
gitlab_rails['registry_api_url'] = "http://127.0.0.1:5000"

## Pages and KAS on loopback, passed through by jobgate (hosts.passthrough).
gitlab_pages['listen_proxy'] = "127.0.0.1:8090"
gitlab_kas['listen_address'] = "127.0.0.1:8150"

## The client address GitLab logs and rate-limits by comes from jobgate's X-Forwarded-For.
gitlab_rails['trusted_proxies'] = ['127.0.0.1/32']
gitlab_workhorse['trusted_cidrs_for_x_forwarded_for'] = ['127.0.0.1/32']
