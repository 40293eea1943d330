// Loaded with `node -r` before Omniboard: its server calls app.listen(port), which binds every interface; this
// binds it to $OMNIBOARD_HOST (127.0.0.1 unless the user asks otherwise with `experiments.omniboard --host`).
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (/^\d+$/.test(String(args[0])) && typeof args[1] !== 'string') {
    args.splice(1, 0, process.env.OMNIBOARD_HOST || '127.0.0.1');
  }
  return listen.apply(this, args);
};
