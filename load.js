const net = require('net');
const s = net.connect(24401, '127.0.0.1');
const N = 1000000; const v = 'x'.repeat(100);
let chunks = [];
for (let i = 0; i < N; i++) { chunks.push(`ms key:${String(i).padStart(28, '0')} 100 q F5\r\n${v}\r\n`); if (chunks.length === 5000) { s.write(chunks.join('')); chunks = []; } }
s.write(chunks.join('') + 'mn\r\n');
s.on('data', (d) => { if (d.toString().includes('MN')) { s.end(); } });
