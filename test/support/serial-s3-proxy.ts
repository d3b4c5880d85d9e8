// A loopback proxy in front of moto that passes conditional requests (If-Match, If-None-Match) on
// one at a time, in arrival order, for tests with several controller PROCESSES. moto checks a
// write's condition and stores the object in separate steps on concurrent server threads, so two
// simultaneous conditional writes to one key can both succeed there, where S3 lets exactly one
// win (docs/state.md). Serializing them in front of moto restores S3's behaviour; which writer
// wins is still decided by the race. Everything else is forwarded as it comes.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SerialProxy {
  url: string;
  /** Conditional requests forwarded so far, and how many of them moto refused (412/409). */
  stats: { conditional: number; refused: number };
  close(): Promise<void>;
}

export async function startSerialS3Proxy(target: string): Promise<SerialProxy> {
  const upstream = new URL(target);
  const stats = { conditional: 0, refused: 0 };
  let chain: Promise<void> = Promise.resolve();
  const agent = new http.Agent({ keepAlive: true });

  const forward = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): Promise<void> =>
    new Promise((resolve) => {
      const out = http.request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent },
        (up) => {
          const chunks: Buffer[] = [];
          up.on('data', (c: Buffer) => chunks.push(c));
          up.on('end', () => {
            if (up.statusCode === 412 || up.statusCode === 409) stats.refused++;
            res.writeHead(up.statusCode ?? 502, up.headers).end(Buffer.concat(chunks));
            resolve();
          });
          up.on('error', () => resolve());
        },
      );
      out.on('error', (err) => {
        res.writeHead(502, { 'content-type': 'text/plain' }).end(`proxy: ${err.message}`);
        resolve();
      });
      out.end(body);
    });

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.headers['if-match'] === undefined && req.headers['if-none-match'] === undefined) {
        void forward(req, body, res);
        return;
      }
      stats.conditional++;
      const previous = chain;
      let done!: () => void;
      chain = new Promise((r) => (done = r));
      void previous.then(() => forward(req, body, res)).finally(() => done());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    close: () =>
      new Promise((resolve) => {
        agent.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
