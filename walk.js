const net = require('net');
const s = net.connect(24401, '127.0.0.1');
const t0 = Date.now(); let bytes = 0; let tail = '';
s.write(`lru_crawler metadump ${process.argv[2] || 'hash'}\r\n`);
s.on('data', (d) => { bytes += d.length; tail = (tail + d.toString('latin1')).slice(-10); if (tail.endsWith('END\r\n')) { console.log(`walk ${process.argv[2]||'hash'}: ${bytes} bytes in ${Date.now() - t0} ms`); s.end(); } });
