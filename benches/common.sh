# Shared by the load scripts (sourced): a free loopback port, and the nginx every proxy is put in
# front of (answers 200 "ok" to everything, keep-alive without limit, no access log).
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_nginx DIR PORT: runs nginx in the background with its files in DIR.
start_nginx() {
    mkdir -p "$1/nginx-tmp"
    cat > "$1/nginx.conf" <<NGINX
user root; worker_processes 1; daemon off; pid $1/nginx.pid; error_log $1/nginx.err;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $1/nginx-tmp; keepalive_requests 1000000;
  server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } } }
NGINX
    nginx -c "$1/nginx.conf" &
}
